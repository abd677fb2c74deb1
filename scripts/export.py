#!/usr/bin/env python
"""python scripts/export.py --help"""

import sys

from catdog_lightning.cli import export_main

if __name__ == "__main__":
    sys.exit(export_main())
