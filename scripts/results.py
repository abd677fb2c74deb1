#!/usr/bin/env python
"""Measure every model on real photos and regenerate docs/RESULTS.md: python scripts/results.py --help"""

import sys

from catdog_lightning.cli import results_main

if __name__ == "__main__":
    sys.exit(results_main())
