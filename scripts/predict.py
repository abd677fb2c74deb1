#!/usr/bin/env python
"""python scripts/predict.py --help"""

import sys

from catdog_lightning.cli import predict_main

if __name__ == "__main__":
    sys.exit(predict_main())
