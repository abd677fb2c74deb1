#!/usr/bin/env python
"""Time the lesson's pipeline, this project's, and the compute floor side by side: python scripts/benchmark.py --help"""

import sys

from catdog_lightning.cli import benchmark_main

if __name__ == "__main__":
    sys.exit(benchmark_main())
