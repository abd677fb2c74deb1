"""A frozen backbone's features of many images, a few at a time (what a linear probe trains its head on)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..progress import progress

# Images per backbone forward pass. Small on purpose: at 224 px a batch of 64 has activation tensors of
# hundreds of MB, which the allocator maps and unmaps from the OS on every pass; small batches run about
# twice as fast on a CPU and keep peak memory lowest (measurements: docs/performance.md).
FEATURE_BATCH = 4


def extract_features(
    images: torch.Tensor, extract: Callable[[torch.Tensor], torch.Tensor], desc: str = "backbone features"
) -> torch.Tensor:
    """``extract`` (uint8 ``n x 3 x S x S`` -> float ``n x V x D``) over all ``images``, FEATURE_BATCH at a time."""
    with progress(len(images), desc, disable=len(images) < 256) as bar:
        parts = []
        for start in range(0, len(images), FEATURE_BATCH):
            parts.append(extract(images[start : start + FEATURE_BATCH]))
            bar.update(len(parts[-1]))
    return torch.cat(parts)
