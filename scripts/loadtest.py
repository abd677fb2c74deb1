#!/usr/bin/env python
"""Load-test the HTTP server: python scripts/loadtest.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.lab.cli import loadtest_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(loadtest_main())
