"""Layers around the network that checkpoints and exports must carry: input statistics, test-time averaging."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

MAX_PARAMETERS = 1_000_000_000  # 4 GB of fp32 weights, before gradients and optimiser state


def refuse_oversized(parameters: int, flag: str) -> None:
    """A network too large to allocate is one line naming the flag, not an allocator's traceback."""
    if parameters > MAX_PARAMETERS:
        raise ConfigError(
            f"{flag}: that network would hold {parameters:,} weights, over {MAX_PARAMETERS:,} (4 GB before "
            "gradients and optimiser state); choose smaller sizes."
        )


def one_logit_flat(logits: torch.Tensor, outputs: int) -> torch.Tensor:
    """``N x 1`` as ``N`` (two classes: one logit an image); ``N x C`` as it is. Decided by the layer's width,
    a plain int: ``squeeze(-1)`` alone becomes an ONNX Squeeze that fails on a width other than 1, and a test
    of the tensor's shape warns in traced graphs."""
    return logits.squeeze(-1) if outputs == 1 else logits


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


def zoom_margin(image_size: int, zoom: float) -> int:
    """Whole pixels to cut from each edge of an ``image_size`` picture to keep ``zoom`` of each side
    (at least one pixel is kept, however small ``zoom`` is)."""
    return min(round(image_size * (1.0 - zoom) / 2), (image_size - 1) // 2)


def centre_zoom(images: torch.Tensor, margin: int) -> torch.Tensor:
    """Each ``N x C x H x W`` image without ``margin`` pixels at every edge, resized back to ``H x W``.

    The margin is a plain int (see :func:`zoom_margin`), so traced and exported graphs hold no shape maths.
    """
    if margin == 0:
        return images
    crop = images[..., margin:-margin, margin:-margin]
    return F.interpolate(crop, size=images.shape[-2:], mode="bilinear", align_corners=False)


def average_views(net: nn.Module, images: torch.Tensor, flip: bool, margin: int = 0) -> torch.Tensor:
    """Test-time augmentation: ``net``'s logit averaged over several looks at each image.

    The looks are the image, its centre zoomed in (``margin`` > 0, see :func:`centre_zoom`) and, with
    ``flip``, the left-right mirror of each. Cats and dogs look the same mirrored, and a network trained
    on random crops also knows the zoomed-in view, so several looks err less than one; it costs extra
    forward passes at evaluation and nothing in training.
    """
    return torch.stack([net(view) for view in views(images, flip, margin)]).mean(0)


def views(images: torch.Tensor, flip: bool, margin: int = 0) -> list[torch.Tensor]:
    """The looks :func:`average_views` averages over, in a fixed order: the image first."""
    looks = [images, centre_zoom(images, margin)] if margin > 0 else [images]
    return looks + [look.flip(-1) for look in looks] if flip else looks


class ViewAverage(nn.Module):
    """:func:`average_views` as a module, for exports."""

    def __init__(self, net: nn.Module, flip: bool = True, margin: int = 0):
        super().__init__()
        self.net, self.flip, self.margin = net, flip, margin

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return average_views(self.net, images, self.flip, self.margin)
