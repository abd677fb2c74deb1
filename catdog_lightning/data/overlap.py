"""Photos in more than one split: the same folder given as train and test, or copies of one photo.

An image tested (or validated) on that was also trained on makes the accuracy read too high. Decoded pixels
are compared, not file names: a copy under another name, or the same folder reached twice, is found too.
"""

from __future__ import annotations

import hashlib
import warnings

from ..errors import CatDogWarning, DataError
from .datasets import DecodedImageDataset

SHOW_FIRST = 3
_ROWS_AT_ONCE = 256


class SplitOverlapWarning(CatDogWarning):
    """Some test or validation images have the same pixels as training images."""


def _digests(split: DecodedImageDataset, known: dict[str, list[bytes]]) -> list[bytes]:
    """A digest of each of the split's images (each source's pixels hashed once, shared between its splits)."""
    if split.source_key not in known or not split.source_key:
        rows = []
        for start in range(0, len(split.source), _ROWS_AT_ONCE):
            block = split.source[start : start + _ROWS_AT_ONCE].contiguous().numpy()
            rows += [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in block]
        known[split.source_key] = rows
    rows = known[split.source_key]
    return [rows[i] for i in split.index.tolist()]


def shared_with_training(
    train: DecodedImageDataset, others: dict[str, DecodedImageDataset | None]
) -> dict[str, list[tuple[str, str]]]:
    """For each other split: ``(its path, the training path)`` of each image with a training image's pixels."""
    known: dict[str, list[bytes]] = {}
    trained = dict(zip(_digests(train, known), train.paths or [""] * len(train), strict=True))
    found = {}
    for name, split in others.items():
        if split is not None:
            paths = split.paths or [""] * len(split)
            found[name] = [(p, trained[d]) for d, p in zip(_digests(split, known), paths, strict=True) if d in trained]
    return found


def check_overlap(train: DecodedImageDataset, others: dict[str, DecodedImageDataset | None], strict: bool) -> int:
    """Warn (or, ``strict``, raise :class:`DataError`) when other splits hold training images; returns how many."""
    shared = shared_with_training(train, others)
    counts = [f"{len(pairs)} of the {len(others[name])} {name}" for name, pairs in shared.items() if pairs]
    if not counts:
        return 0
    examples = "; ".join(f"{a} = {b}" for a, b in [pair for found in shared.values() for pair in found][:SHOW_FIRST])
    message = (
        f"{' and '.join(counts)} images have the same pixels as images trained on (e.g. {examples}): their "
        "accuracy reads too high. Remove the copies (or the folder given twice)"
    )
    if strict:
        raise DataError(f"{message}; --data.strict_splits is on, so the run stops here.")
    warnings.warn(f"{message}; --data.strict_splits true stops a run at this.", SplitOverlapWarning, stacklevel=3)
    return sum(len(pairs) for pairs in shared.values())
