#!/usr/bin/env python
"""The pretrained recipes on a folder of your classes (clothing-10): python scripts/your_classes.py --help"""

import sys
from pathlib import Path

# The lab's programs measure the project and write into its docs/: they live in the checkout, beside the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from lab.cli import your_classes_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(your_classes_main())
