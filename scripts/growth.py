#!/usr/bin/env python
"""How costs grow with the folder (2k, 10k, 25k generated pictures): python scripts/growth.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.lab.cli import growth_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(growth_main())
