#!/usr/bin/env python
"""python scripts/evaluate.py --help"""

import sys

from catdog_lightning.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
