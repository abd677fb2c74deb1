"""Writing predictions to CSV or JSON files."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .atomic import atomic_write
from .inference import Prediction

FIELDS = ("path", "p_cat", "label", "error")


def write_predictions(predictions: Sequence[Prediction], path: str | os.PathLike) -> None:
    """The predictions as CSV or JSON, written whole or not at all (atomically).

    File names that are not valid UTF-8 (the OS gives Python them with surrogate escapes) keep their
    original bytes in the CSV, and are escaped in JSON, instead of failing after all the work.
    """
    path = Path(path)
    rows = [asdict(p) for p in predictions]
    if path.suffix.lower() == ".json":
        text = json.dumps(rows, indent=2)
    else:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8", "surrogateescape")))
