#!/usr/bin/env python
"""Hyperparameter sweeps on Optuna: python scripts/sweep.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.cli import sweep_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(sweep_main())
