"""Layers around the network that checkpoints and exports must carry: input statistics, mirror averaging."""

from __future__ import annotations

import torch
from torch import nn


class Standardize(nn.Module):
    """``(x - mean) / std`` per colour channel of ``N x C x H x W`` images.

    The statistics are buffers: saved in every checkpoint, restored by ``load_from_checkpoint``, traced
    into ONNX/TorchScript exports. Until :meth:`set_statistics` is called it is the identity
    (mean 0, std 1), which is what a run without ``--data.normalize`` keeps.
    """

    def __init__(self, channels: int = 3):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if bool((std <= 0).any()):
            raise ValueError(f"channel std must be positive, got {std.tolist()}")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean[:, None, None]) / self.std[:, None, None]


def mirror_average(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: ``net``'s logit averaged over each image and its left-right mirror.

    Cats and dogs look the same mirrored, so two looks at a picture err less than one; this costs a
    second forward pass at evaluation and nothing in training.
    """
    return (net(images) + net(images.flip(-1))) / 2


class MirrorAverage(nn.Module):
    """:func:`mirror_average` as a module, for exports."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return mirror_average(self.net, images)
