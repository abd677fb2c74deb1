"""A prediction for one image file, and predictions written to CSV or JSON files."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..classes import predicted, probability_fields
from ..storage.atomic import atomic_write


@dataclass(frozen=True)
class Prediction:
    path: str
    probabilities: dict[str, float] | None  # each class's probability; None when the file could not be read
    label: str | None  # the most probable class (two classes: the second when its probability is above 0.5)
    error: str | None = None

    @property
    def p_cat(self) -> float | None:
        """P(cat), for the lesson's classes."""
        return None if self.probabilities is None else self.probabilities.get("cat")

    def row(self, classes: Sequence[str]) -> dict:
        """The prediction as a file's row: path, ``p_<class>`` (see :func:`probability_fields`), label, error."""
        probabilities = {
            field: None if self.probabilities is None else self.probabilities[field[2:]]
            for field in probability_fields(classes)
        }
        return {"path": self.path, **probabilities, "label": self.label, "error": self.error}


def predictions_of(paths: Sequence[str], rows: Sequence[Sequence[float] | None], classes: Sequence[str],
                   errors: Sequence[str | None]) -> list[Prediction]:  # fmt: skip
    """A :class:`Prediction` per path from its probabilities (``None``: unreadable, with its error)."""
    out = []
    for path, row, error in zip(paths, rows, errors, strict=True):
        if row is None:
            out.append(Prediction(path, None, None, error or "unreadable"))
            continue
        out.append(Prediction(path, dict(zip(classes, map(float, row), strict=True)), classes[predicted(row)]))
    return out


def write_predictions(predictions: Sequence[Prediction], path: str | os.PathLike, classes: Sequence[str]) -> None:
    """The predictions as CSV or JSON, written whole or not at all (atomically).

    File names that are not valid UTF-8 (the OS gives Python them with surrogate escapes) keep their
    original bytes in the CSV, and are escaped in JSON, instead of failing after all the work.
    """
    path = Path(path)
    rows = [p.row(classes) for p in predictions]
    if path.suffix.lower() == ".json":
        text = json.dumps(rows, indent=2)
    else:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=["path", *probability_fields(classes), "label", "error"])
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8", "surrogateescape")))
