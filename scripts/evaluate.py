#!/usr/bin/env python
"""python scripts/evaluate.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.cli import evaluate_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(evaluate_main())
