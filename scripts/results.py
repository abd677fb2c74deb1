#!/usr/bin/env python
"""Measure every model on real photos and regenerate docs/RESULTS.md: python scripts/results.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.lab.cli import results_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(results_main())
