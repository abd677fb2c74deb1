#!/usr/bin/env python
"""Run the lesson's PyTorch program as written, for comparison: python scripts/lesson.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.lab.cli import lesson_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(lesson_main())
