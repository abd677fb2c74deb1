#!/usr/bin/env python
"""Serve a trained model over HTTP with LitServe: python scripts/serve.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.cli import serve_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(serve_main())
