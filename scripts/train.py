#!/usr/bin/env python
"""Train the cat/dog classifier: python scripts/train.py --help"""

import sys

from catdog_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main())
