#!/usr/bin/env python
"""Time the lesson's pipeline, this project's, and the compute floor side by side: --help for flags."""

import argparse
import json
import sys
from pathlib import Path

from catdog_lightning.benchmark import format_table, run_benchmark
from catdog_lightning.data import ensure_builtin_dataset

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "catdog-a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", help=f"folder with train/ (default: {REAL} if present, else built-in data)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs timed for each pipeline (default 5)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    args = parser.parse_args()
    if args.epochs < 2:
        print("error: --epochs must be at least 2 (the first epoch is not a steady one)", file=sys.stderr)
        return 2
    data_dir = args.data_dir or (str(REAL) if (REAL / "train").is_dir() else str(ensure_builtin_dataset()))
    if not (Path(data_dir) / "train").is_dir():
        print(f"error: --data_dir {data_dir} has no train/ folder", file=sys.stderr)
        return 2
    result = run_benchmark(data_dir, args.epochs)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
