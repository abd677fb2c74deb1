#!/usr/bin/env python
"""python scripts/shard.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.cli import shard_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(shard_main())
