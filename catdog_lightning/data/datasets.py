"""The datasets batches come from: rows of decoded pixels, or a probe's backbone features."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


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
    ):
        self.source = images
        self.index = torch.arange(len(labels)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        self.labels = labels[self.index]
        self.paths = [paths[i] for i in self.index.tolist()] if paths is not None else None

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
