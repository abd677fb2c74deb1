#!/usr/bin/env python
"""Run the lesson's PyTorch program as written, for comparison: python scripts/lesson.py --help"""

import sys

from catdog_lightning.cli import lesson_main

if __name__ == "__main__":
    sys.exit(lesson_main())
