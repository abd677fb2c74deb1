"""The datasets batches come from: rows of decoded pixels, or a probe's backbone features."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .cache import DecodedImages


class DecodedImageDataset(Dataset):
    """Some rows of a decoded ``uint8`` image tensor (memory-mapped from the cache, or in memory).

    The rows are looked up through ``index``, never copied out whole: a split of a 224-pixel cache stays in
    the page cache, shared with the other splits and with DDP processes. Epochs never touch a photo file.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: np.ndarray | None = None,
        paths: list[str] | None = None,
        source_key: str = "",
    ):
        self.source, self.source_key = images, source_key  # the key names the pixels, for caches derived from them
        self.index = torch.arange(len(labels)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        self.labels = labels[self.index]
        self.paths = [paths[i] for i in self.index.tolist()] if paths is not None else None

    @classmethod
    def of(cls, decoded: DecodedImages, indices: np.ndarray | None = None) -> DecodedImageDataset:
        """The rows ``indices`` (default: all) of a decoded folder."""
        return cls(decoded.images, decoded.labels, indices, decoded.paths, decoded.key)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source[self.index[i]], self.labels[i]

    def take(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """The images at positions ``rows`` of this split (a copy)."""
        return self.source[self.index[rows]]

    @property
    def images(self) -> torch.Tensor:
        """Every image of this split, copied into memory: for small splits and tests."""
        return self.take(slice(None))


class FeatureDataset(Dataset):
    """Backbone features (``V x D`` per image) of a split's images, with their labels."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[i], self.labels[i]
