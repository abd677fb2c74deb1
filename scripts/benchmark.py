#!/usr/bin/env python
"""Time the lesson's pipeline, this project's, and the compute floor side by side: python scripts/benchmark.py --help"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python imports torch: a clean exit, not a traceback
        from catdog_lightning.lab.cli import benchmark_main
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(benchmark_main())
