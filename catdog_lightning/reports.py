"""Writing predictions to CSV or JSON files."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .inference import Prediction

FIELDS = ("path", "p_cat", "label", "error")


def write_predictions(predictions: Sequence[Prediction], path: str | os.PathLike) -> None:
    path = Path(path)
    rows = [asdict(p) for p in predictions]
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=2))
        return
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
