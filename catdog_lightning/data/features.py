"""The on-disk cache of a frozen backbone's features, kept like the decoded pixels (the model computes them).

A linear probe trains only a head on top of a frozen pretrained network, so the network's output for
an image never changes: computing it once instead of every epoch turns minutes an epoch into well under
a second. The cache file is keyed by the decoded pixels' own key and by the extractor's key (the model
names its backbone weights, input statistics and test-time looks), so new photos or other weights
compute them afresh.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

from ..storage.atomic import atomic_write

log = logging.getLogger(__name__)
# uint8 N x 3 x S x S images -> N x V x ... features (V looks at each image); the model supplies it
Extractor = Callable[[torch.Tensor], torch.Tensor]


def feature_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / f"features-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"


def _checksum(features: torch.Tensor) -> int:
    return zlib.crc32(features.contiguous().view(torch.uint8).numpy().data)  # the bytes, whatever the dtype


def load_or_extract(
    images: torch.Tensor, extract: Extractor, key: str, cache_dir: str | os.PathLike | None
) -> tuple[torch.Tensor, bool]:
    """``extract``'s features of every image, from the cache when it holds them; and whether it did."""
    path = feature_path(cache_dir, key) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            if (
                blob["key"] == key
                and len(blob["features"]) == len(images)
                and _checksum(blob["features"]) == blob["checksum"]
            ):
                return blob["features"], True
        except Exception as exc:  # torn or foreign file: compute afresh
            log.warning("Feature cache %s is unreadable (%s); recomputing it.", path, type(exc).__name__)
    features = extract(images)
    if path is not None:
        blob = {"key": key, "features": features, "checksum": _checksum(features)}
        try:
            atomic_write(path, lambda fh: torch.save(blob, fh))
        except (OSError, RuntimeError) as exc:  # a full or read-only disk: the run goes on, uncached
            log.warning("Could not write the feature cache %s (%s); this run goes on.", path, str(exc)[:120])
    return features, False
