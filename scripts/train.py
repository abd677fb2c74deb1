#!/usr/bin/env python
"""Train the cat/dog classifier: python scripts/train.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(main())
