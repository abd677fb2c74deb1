"""Fine-tuning a pretrained backbone: Lightning's ``BackboneFinetuning``, with its BatchNorm layers frozen too."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BackboneFinetuning, BaseFinetuning


class HeadThenBackbone(BackboneFinetuning):
    """The head alone until ``unfreeze_backbone_at_epoch``, then the backbone too, at ``ratio`` x the head's rate.

    Lightning's callback does the unfreezing, the new optimiser parameter group and its rate (growing 1.5x
    an epoch up to the head's, Lightning's ``multiplicative`` rule). Two things are added:

    - the frozen backbone has its BatchNorm layers frozen too (Lightning's default keeps training them) and
      runs in eval mode (``CatDogClassifier.train`` sees to that), so its statistics stay ImageNet's and a
      training step computes what evaluation computes;
    - a run resumed after the unfreeze epoch makes the backbone trainable again: Lightning restores the
      parameter group but not ``requires_grad``, so the backbone would silently stop learning.
    """

    def __init__(self, unfreeze_backbone_at_epoch: int, backbone_lr_ratio: float):
        super().__init__(unfreeze_backbone_at_epoch, backbone_initial_ratio_lr=backbone_lr_ratio, train_bn=True)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=False)
        pl_module.train(pl_module.training)  # re-apply eval mode to the now frozen backbone

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer) -> None:
        super().finetune_function(pl_module, epoch, optimizer)
        if epoch == self.unfreeze_backbone_at_epoch:
            pl_module.train(pl_module.training)  # the backbone trains from this epoch on

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > self.unfreeze_backbone_at_epoch:  # resumed past the unfreeze epoch
            self.make_trainable(pl_module.backbone)
            pl_module.train(pl_module.training)


class TopDownFinetuning(BaseFinetuning):
    """A block fine-tune: the head alone until ``unfreeze_at_epoch``, then the backbone's top ``groups``: one
    more every ``every`` epochs (the last convolution first, then the blocks below it), or all at once (0).

    The groups are in the optimiser from the start (in their own parameter group, at ``backbone_lr_ratio``
    of the head's rate, scheduled with it); this callback only switches ``requires_grad``, and always from the
    epoch number alone, at every epoch start and when a run (re)starts: a run resumed past the unfreeze epoch
    cannot come back with its backbone frozen (Lightning's own callback restores the optimiser's groups but
    not ``requires_grad``, Lightning-AI/pytorch-lightning#21901).
    """

    def __init__(self, unfreeze_at_epoch: int, groups: list[list], every: int = 1):
        super().__init__()
        self.unfreeze_at_epoch, self.groups, self.every = unfreeze_at_epoch, groups, every

    def _apply(self, epoch: int) -> None:
        for i, group in enumerate(self.groups):
            for module in group:
                module.requires_grad_(epoch >= self.unfreeze_at_epoch + i * self.every)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self._apply(0)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer) -> None:
        self._apply(epoch)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer.current_epoch)  # a resumed run: on_train_epoch_start is skipped mid-epoch
