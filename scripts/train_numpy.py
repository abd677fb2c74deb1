#!/usr/bin/env python
"""Train the lesson's from-scratch NumPy network: python scripts/train_numpy.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.lab.cli import numpy_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(numpy_main())
