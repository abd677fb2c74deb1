"""A prediction for one image file, and predictions written to CSV or JSON files."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..storage.atomic import atomic_write

FIELDS = ("path", "p_cat", "label", "error")


@dataclass(frozen=True)
class Prediction:
    path: str
    p_cat: float | None  # None when the file could not be read
    label: str | None  # "cat" (P(cat) > 0.5) or "dog"
    error: str | None = None


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
