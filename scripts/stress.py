#!/usr/bin/env python
"""Crash-safety stress run, by hand (not in CI): python scripts/stress.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.lab.cli import stress_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(stress_main())
