#!/usr/bin/env python
"""Train the lesson's from-scratch NumPy network: python scripts/train_numpy.py --help"""

import sys

from catdog_lightning.cli import numpy_main

if __name__ == "__main__":
    sys.exit(numpy_main())
