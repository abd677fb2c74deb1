"""Features of a frozen backbone, computed once per image and kept on disk like the decoded pixels.

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
from tqdm import tqdm

from ..atomic import atomic_write

log = logging.getLogger(__name__)
# Images per forward pass. Small on purpose: at 224 px a batch of 64 has activation tensors of ~300 MB,
# which the allocator maps and unmaps from the OS on every pass; batches of 4 or 8 run 2.2x faster on 2 CPU
# cores (64-66 vs 29 images/s, EfficientNet-Lite0, before allocator.py's tuning), and 4 keeps a 224-px
# probe run's peak memory lowest (1.50 GB against 1.62 GB with 8, first run on catdog-a).
CHUNK = 4
# uint8 N x 3 x S x S images -> float N x V x D features (V looks at each image)
Extractor = Callable[[torch.Tensor], torch.Tensor]


def feature_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / f"features-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"


def _checksum(features: torch.Tensor) -> int:
    return zlib.crc32(features.contiguous().numpy().data)


def extract_features(images: torch.Tensor, extract: Extractor, desc: str = "backbone features") -> torch.Tensor:
    chunks = range(0, len(images), CHUNK)
    with tqdm(total=len(images), desc=desc, unit="img", disable=True if len(images) < 256 else None) as bar:
        parts = []
        for start in chunks:
            parts.append(extract(images[start : start + CHUNK]).float())
            bar.update(len(parts[-1]))
    return torch.cat(parts)


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
    features = extract_features(images, extract)
    if path is not None:
        blob = {"key": key, "features": features, "checksum": _checksum(features)}
        try:
            atomic_write(path, lambda fh: torch.save(blob, fh))
        except (OSError, RuntimeError) as exc:  # a full or read-only disk: the run goes on, uncached
            log.warning("Could not write the feature cache %s (%s); this run goes on.", path, str(exc)[:120])
    return features, False
