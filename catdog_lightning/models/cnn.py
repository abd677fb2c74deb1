"""A small convolutional network as a plain ``nn.Module``: the step beyond the lesson's MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .layers import one_logit_flat, refuse_oversized


class SmallCNN(nn.Module):
    """Blocks of conv3x3-BatchNorm-ReLU (once, or more times: VGG-style) then maxpool; global average
    pooling, dropout, one logit (one per class for three classes or more).

    Pooling halves the picture per block (rounding up), and the global average makes the head
    independent of the input size, so any ``image_size`` works. Four blocks of [32, 64, 128, 256]
    channels train in minutes at 64x64 on a 2-core CPU.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128, 256),
        dropout: float = 0.0,
        convs_per_block: int = 1,
        num_outputs: int = 1,
    ):
        """
        Args:
            channels: channels per block.
            dropout: dropout before the output layer (0 = off).
            convs_per_block: conv-BatchNorm-ReLU layers per block, before its max-pool (2: VGG-style).
            num_outputs: logits per image (follows the data's classes: 1 for two, else one per class).
        """
        super().__init__()
        self.num_outputs = num_outputs
        if not channels or any(int(c) < 1 for c in channels):
            raise ConfigError(
                f"--model.net.init_args.channels must be a non-empty list of positive sizes, got {list(channels)}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"--model.net.init_args.dropout must be in [0, 1), got {dropout}.")
        if convs_per_block < 1:
            raise ConfigError(f"--model.net.init_args.convs_per_block must be at least 1, got {convs_per_block}.")
        widths = [3, *(int(c) for c in channels)]
        refuse_oversized(sum(9 * a * b * convs_per_block for a, b in zip(widths, widths[1:], strict=False)),
                         "--model.net.init_args.channels")  # fmt: skip
        blocks: list[nn.Module] = []
        previous = 3
        for width in map(int, channels):
            for _ in range(convs_per_block):
                blocks += [
                    nn.Conv2d(previous, width, 3, padding=1, bias=False),  # BatchNorm supplies the bias
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                previous = width
            blocks.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(previous, num_outputs)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``N x 3 x S x S`` floats -> ``N`` logits (``N x num_outputs`` for more than one)."""
        # channels_last lets oneDNN/cuDNN run the convolutions without layout shuffles (docs/performance.md).
        images = images.contiguous(memory_format=torch.channels_last)
        return one_logit_flat(self.head(self.features(images)), self.num_outputs)
