"""A pretrained backbone with a fresh one-logit head, and where its frozen part ends.

A probe freezes the whole backbone; a block fine-tune freezes all but its top blocks. Either way the frozen
part's output for a photo never changes, so it is computed once (:meth:`PretrainedNet.frozen_output`) and
cached, and training runs the rest on the cache (:meth:`PretrainedNet.logits_of_cached`). On photos,
:meth:`PretrainedNet.forward` runs it all, and gives the same logits.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .backbones import build_backbone


class PretrainedNet(nn.Module):
    """A backbone and a fresh one-logit head (dropout, linear): ``N x 3 x S x S`` -> ``N`` logits.

    ``cut``: how many of the backbone's top blocks train above the frozen part (0: none, a linear probe;
    None: no frozen part, the whole backbone trains on photos).
    """

    def __init__(self, arch: str, image_size: int, dropout: float = 0.0, cut: int | None = None):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"--model.dropout must be in [0, 1), got {dropout}.")
        self.backbone, features = build_backbone(arch, image_size)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, 1))
        self.cut = cut
        if cut and not 1 <= cut < getattr(self.backbone, "blocks", 0):
            most = getattr(self.backbone, "blocks", 1) - 1
            raise ConfigError(f"--model.finetune_blocks must be between 1 and {most} for {arch}, got {cut}.")
        if cut is not None:
            for module in self.frozen_modules():
                module.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels_last: oneDNN/cuDNN convolutions without layout shuffles (docs/performance.md).
        return self.head_logits(self.backbone(images.contiguous(memory_format=torch.channels_last)))

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features).squeeze(-1)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.backbone] if self.cut == 0 else self.backbone.bottom_modules(self.cut)

    def top_groups(self) -> list[list[nn.Module]]:
        """What trains above the frozen part, in the order it unfreezes (none for a probe)."""
        return self.backbone.top_groups(self.cut) if self.cut else []

    def frozen_output(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised ``N x 3 x S x S`` images -> pooled features (a probe) or activations below the top."""
        images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images) if self.cut == 0 else self.backbone.bottom(images, self.cut)

    def logits_of_cached(self, cached: torch.Tensor, one_look: bool) -> torch.Tensor:
        """Logits from ``N x V x ...`` cached frozen outputs (V looks at each photo): averaged over the looks,
        or, ``one_look`` (a block fine-tune's training steps), each photo or its mirror at random."""
        if self.cut == 0:  # a probe: the head alone, averaged over the looks
            return self.head_logits(cached).mean(1)
        rest = lambda x: self.head_logits(self.backbone.top(x.contiguous(memory_format=torch.channels_last), self.cut))  # noqa: E731
        if one_look:  # the augmentation cached activations allow
            pick = torch.randint(cached.shape[1], (len(cached),), device=cached.device)
            return rest(cached[torch.arange(len(cached), device=cached.device), pick])
        return torch.stack([rest(cached[:, v]) for v in range(cached.shape[1])], 1).mean(1)
