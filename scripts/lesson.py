#!/usr/bin/env python
"""Run the lesson's PyTorch program as written, for comparison: python scripts/lesson.py --help"""

import sys
from pathlib import Path

# The lab's programs measure the project and write into its docs/: they live in the checkout, beside the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from lab.cli import lesson_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(lesson_main())
