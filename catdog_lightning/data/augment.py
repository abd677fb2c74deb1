"""Augmentation on decoded tensors (a whole batch at once, on whatever device it lives on)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def flip_and_crop(images: torch.Tensor, min_scale: float = 0.8) -> torch.Tensor:
    """Random horizontal flip and a mild random resized crop of each image in an ``N x C x H x W`` batch.

    One ``grid_sample`` does both: each image gets an affine map that zooms in by ``1/s`` (the crop
    keeps a fraction ``s`` in ``[min_scale, 1]`` of each side), shifts the crop anywhere inside the
    picture, and mirrors x for half of the batch.
    """
    n = images.shape[0]
    dev, dtype = images.device, images.dtype
    scale = torch.empty(n, device=dev, dtype=dtype).uniform_(min_scale, 1.0)
    flip = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0).to(dtype)
    shift = (torch.rand(n, 2, device=dev, dtype=dtype) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.zeros(n, 2, 3, device=dev, dtype=dtype)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
