"""``CatDogClassifier``: the LightningModule that trains the network it is given and reports metrics.

Two classes (the lesson's cat/dog): one logit, BCE, binary metrics. Three or more: one logit per class,
cross-entropy, and torchmetrics' multiclass metrics (accuracy over all images, macro F1, macro AUROC,
per-class accuracy, top-5 accuracy from ten classes on).

Over 250 lines because Lightning's hooks live on this one class (steps, epoch ends, optimisers, callbacks) and
the frozen-part pass a probe caches (its test-time views and precision) needs the module's standardisation and
views; the networks (``--model.net``, models/nets.py), backbones and fine-tuning callbacks are their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from ..classes import CATDOG_CLASSES, TOP5_FROM, output_count, probabilities
from ..errors import ConfigError
from ..hardware import resolve_feature_precision
from . import schedules
from .features import extract_features
from .layers import Standardize, ViewAverage, average_views, views, zoom_margin
from .nets import DEFAULT_NET, build_net, short_name


@rank_zero_only
def rank_zero_print(line: str) -> None:
    print(line)


def _accuracy(count: int):
    """Accuracy as the share of all images right (micro average, for any number of classes)."""
    return BinaryAccuracy() if count == 2 else MulticlassAccuracy(count, average="micro")


def _stage_metrics(stage: str, count: int) -> MetricCollection:
    """acc (share of images right), f1 and auroc (binary; macro for more classes: each class weighs the same),
    top5_acc from :data:`TOP5_FROM` classes on."""
    if count == 2:
        metrics = {"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "auroc": BinaryAUROC()}
    else:
        metrics = {
            "acc": _accuracy(count),
            "f1": MulticlassF1Score(count, average="macro"),
            "auroc": MulticlassAUROC(count, average="macro"),
        }
        if count >= TOP5_FROM:
            metrics["top5_acc"] = MulticlassAccuracy(count, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=f"{stage}/")


class CatDogClassifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module | str = DEFAULT_NET,  # noqa: B006 (a mapping, as jsonargparse and hparams.yaml show it)
        image_size: int = 64,
        class_names: Sequence[str] = CATDOG_CLASSES,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        scheduler: Literal["none", "cosine", "onecycle"] = "none",
        tta_flip: bool = False,
        tta_zoom: float = 1.0,
        class_weights: Literal["none", "balanced"] = "none",
    ):
        """A network trained with BCE-with-logits (two classes) or cross-entropy and Adam (or AdamW, or SGD): the
        loss, the metrics, the optimiser and its schedule, and the test-time views. The network is a parameter.

        Args:
            net: the network: a short name (mlp: the lesson's, cnn, or a pretrained backbone such as
                efficientnet_lite1), or class_path and init_args (its own settings), e.g. --model.net
                catdog_lightning.models.SmallCNN --model.net.init_args.channels [16,32] (docs/your-network.md).
            image_size: side of the square input images (follows --data.image_size).
            class_names: the classes in label order (follows the data: train/'s class folders).
            lr: learning rate (the peak rate with the onecycle scheduler).
            weight_decay: weight decay: an L2 term in the gradient with adam and sgd, decoupled with adamw.
            optimizer: adam (the lesson's), adamw (weight decay applied to the weights directly) or sgd
                (Nesterov momentum 0.9, weight decay as an L2 term: the usual choice for CNNs, with lr ~0.1).
            scheduler: learning-rate schedule: none, cosine (per epoch, to 0 at max_epochs) or onecycle (per step).
            tta_flip: at validation, test and prediction (and in exports), average each image's logit with
                its mirror image's.
            tta_zoom: below 1, evaluation also averages in a centre crop keeping this share of each side,
                resized back (and its mirror, with tta_flip); 0.9 is the average crop --data.augment trains on.
            class_weights: none, or balanced: each photo's loss weighted by total / (classes x its class's count)
                in the training split, so every class weighs the same in the loss, however few its photos.
        """
        super().__init__()
        if not lr > 0:
            raise ConfigError(f"--model.lr must be positive, got {lr}; the lesson uses 1e-3.")
        if weight_decay < 0:
            raise ConfigError(f"--model.weight_decay must be 0 or more, got {weight_decay}.")
        if not 0.0 < tta_zoom <= 1.0:
            raise ConfigError(f"--model.tta_zoom must be in (0, 1], got {tta_zoom}; try 0.9, or 1 for none.")
        for flag, value, allowed in (
            ("scheduler", scheduler, ("none", "cosine", "onecycle")),
            ("optimizer", optimizer, ("adam", "adamw", "sgd")),
        ):
            if value not in allowed:
                raise ConfigError(f"--model.{flag} must be one of {', '.join(allowed)}, got {value!r}.")
        class_names = [str(name) for name in class_names]
        if len(class_names) < 2 or len(set(class_names)) != len(class_names):
            raise ConfigError(f"class_names must be two or more different names, got {class_names}.")
        count = len(class_names)
        if isinstance(net, nn.Module):  # built by the caller: recorded by its class alone
            self.net, net = net, {"class_path": f"{type(net).__module__}.{type(net).__qualname__}", "init_args": {}}
        else:
            self.net, net = build_net(net, image_size, output_count(count))
        # Primitives only (net as its class_path mapping): the checkpoint loads with weights_only=True.
        self.save_hyperparameters()
        self.standardize = Standardize()  # identity unless the data module has --data.normalize
        if statistics := getattr(self.net, "input_statistics", None):  # what pretrained weights expect
            self.standardize.set_statistics(*(torch.tensor(s) for s in statistics))
        # Set from the training split as fit starts (balanced); not saved: the same split gives the same weights.
        self.register_buffer("class_weight", torch.ones(count), persistent=False)
        self.train_acc = _accuracy(count)
        self.train_loss = MeanMetric()
        for metric in (self.train_acc, self.train_loss):  # in checkpoints: a mid-epoch resume goes on counting
            metric.persistent(True)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_metrics, self.test_metrics = _stage_metrics("val", count), _stage_metrics("test", count)
        # Each class's accuracy (the share of its images found), logged as <stage>/class_acc/<name>.
        per_class = (lambda: MulticlassAccuracy(count, average=None)) if count > 2 else None
        self.val_per_class, self.test_per_class = (per_class(), per_class()) if per_class else (None, None)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so "best" survives a resume

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for ``N x 3 x S x S`` float images in [0, 1] (averaged over the test-time views in evaluation)."""
        images = self.standardize(images)
        views = None if self.training else self._views
        return average_views(self.net, images, *views) if views else self.net(images)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits for a batch as the Trainer's data serves it: photos, or the network's cached frozen-part outputs
        (:meth:`view_features`, ``N x V x ...``: averaged over the V looks; in training, one look each) where the
        DataModule says it serves those (training has it do so for a probe or a block fine-tune)."""
        if self.on_cached_features:
            return self.net.logits_of_cached(inputs.float(), one_look=self.training)
        return self(inputs)

    @property
    def on_cached_features(self) -> bool:
        """Whether the attached Trainer's DataModule serves cached frozen-part outputs instead of photos."""
        trainer = self._trainer
        return bool(trainer is not None and getattr(trainer.datamodule, "serves_features", False))

    @property
    def _views(self) -> tuple[bool, int] | None:
        """(flip, margin) for :func:`average_views` when --model.tta_flip / tta_zoom ask for several looks."""
        margin = zoom_margin(self.hparams.image_size, self.hparams.tta_zoom)
        return (self.hparams.tta_flip, margin) if self.hparams.tta_flip or margin > 0 else None

    def network(self) -> nn.Module:
        """The plain module from images in [0, 1] to evaluation logits: what exports and the graph show."""
        views = self._views
        return nn.Sequential(self.standardize, ViewAverage(self.net, *views) if views else self.net)

    @property
    def backbone(self) -> nn.Module | None:
        """A pretrained network's backbone (what Lightning's BackboneFinetuning freezes), else None."""
        return getattr(self.net, "backbone", None)

    @property
    def caches_features(self) -> bool:
        """Whether training runs on :meth:`view_features` cached once per photo instead of on the photos."""
        return bool(getattr(self.net, "caches_features", False))

    def configure_callbacks(self) -> list[L.Callback]:
        """The network's own (a fine-tune's schedule)."""
        own = getattr(self.net, "configure_callbacks", None)
        return own() if own else []

    @torch.no_grad()  # not inference_mode: the probe's head trains on these tensors
    def view_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen layers' output for each evaluation look at ``N x 3 x S x S`` uint8 images: ``N x V x D``
        pooled features (a probe), or ``N x V x C x H x W`` activations below the top blocks (a block fine-tune).

        Logits computed from these, averaged over V, equal :meth:`forward`'s (see :func:`average_views`). In
        bf16 (the network's ``feature_precision``) they stay bf16, half the memory; their users convert them.
        """
        was_training = self.net.training
        self.net.eval()
        pixels = self.standardize(images.to(self.device).float().div_(255))
        looks = views(pixels, *(self._views or (False, 0)))
        bf16 = self.resolved_feature_precision == "bf16"
        with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
            features = torch.stack([self.net.frozen_output(look) for look in looks], 1)
        self.net.train(was_training)
        return features.cpu()

    @property
    def resolved_feature_precision(self) -> str:
        """32 or bf16: what the network's feature_precision (auto included) means on this device."""
        return resolve_feature_precision(getattr(self.net, "feature_precision", "32"), self.device.type)[0]

    def feature_precision_line(self) -> str | None:
        """The line to print before the frozen layers' pass: what auto chose, or why an explicit bf16 is slow."""
        return resolve_feature_precision(getattr(self.net, "feature_precision", "32"), self.device.type)[1]

    def features_of(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`view_features` of any number of uint8 images, a few at a time (see models/features.py)."""
        return extract_features(images, self.view_features)

    def inputs_for(self, images: torch.Tensor) -> torch.Tensor:
        """What :meth:`logits` takes for these uint8 images in this run: cached features, else floats in [0, 1]."""
        return self.features_of(images) if self.on_cached_features else images.float() / 255

    def feature_key(self) -> str:
        """Names what :meth:`view_features` computes: the network, its frozen weights, input statistics and looks."""
        hp = self.hparams
        precision = self.resolved_feature_precision  # auto is keyed as what it computes in: bf16 or 32
        fixed = f"{short_name(hp.net)}|{hp.image_size}|{self._views}|{getattr(self.net, 'cut', None)}|{precision}"
        digest = hashlib.sha256(fixed.encode())
        # The frozen layers' weights alone: a block fine-tune's top changes as it trains, its cache does not.
        for module in (self.standardize, *self.net.frozen_modules()):
            for name, tensor in module.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    @property
    def class_count(self) -> int:
        return len(self.hparams.class_names)

    def _shared_step(self, batch, training: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, probabilities (two classes: of the second, P(cat); else ``N x C``) and labels of a batch. Balanced
        class weights weigh the training loss only: validation and test report the plain loss.

        Metrics get probabilities, never logits: torchmetrics' binary metrics apply a sigmoid only to a
        batch holding a value outside [0, 1], so logits that all happen to fall inside it would be
        thresholded at 0.5 as if they were probabilities, and scores would depend on batch size and sharding.
        """
        inputs, labels = batch
        logits = self.logits(inputs)
        count = self.class_count
        self._check_outputs(logits, len(labels))
        # BCE with logits = the lesson's Sigmoid + BCELoss, computed stably (log-sum-exp); its N-class kin.
        weighted = training and self.hparams.get("class_weights", "none") == "balanced"
        if count == 2:
            weight = self.class_weight[labels] if weighted else None
            loss = F.binary_cross_entropy_with_logits(logits, labels.float(), weight=weight)
            return loss, torch.sigmoid(logits.detach()), labels
        loss = F.cross_entropy(logits, labels, weight=self.class_weight if weighted else None)
        return loss, torch.softmax(logits.detach().float(), -1), labels

    def _check_outputs(self, logits: torch.Tensor, batch: int) -> None:
        """A network whose output does not fit the classes is one line, not a loss function's shape error."""
        count = self.class_count
        wanted = (batch,) if count == 2 else (batch, count)
        if tuple(logits.shape) != wanted:
            raise ConfigError(
                f"--model.net {short_name(self.hparams.net)} gives {tuple(logits.shape)} logits for {batch} "
                f"images; {count} classes need {wanted}. Give your network a num_outputs argument: it is set "
                "to the logits the classes need (docs/your-network.md)."
            )

    def probabilities(self, inputs: torch.Tensor) -> torch.Tensor:
        """``N x C`` class probabilities for a batch as :meth:`logits` takes it."""
        return probabilities(self.logits(inputs), self.class_count)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, probs, labels = self._shared_step(batch, training=True)
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
        if self.val_per_class is not None:
            self.val_per_class.update(probs, labels)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        return {"probs": probs, "labels": labels}

    def on_validation_epoch_end(self) -> None:
        # Computed over the whole epoch's predictions, not averaged over batches.
        if self.trainer.sanity_checking:  # a few batches of an untrained net: nothing worth reporting
            self.val_metrics.reset()
            if self.val_per_class is not None:
                self.val_per_class.reset()
            return
        metrics = self.val_metrics.compute()
        self.val_metrics.reset()
        acc = metrics.pop("val/acc")
        self.val_acc_best(acc)
        self.log("val/acc", acc, prog_bar=True)
        self.log("val/acc_best", self.val_acc_best.compute())
        self.log_dict({**metrics, **self._per_class("val", self.val_per_class)})

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, probs, labels = self._shared_step(batch)
        self.test_loss.update(loss, weight=len(labels))
        self.test_metrics.update(probs, labels)
        if self.test_per_class is not None:
            self.test_per_class.update(probs, labels)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        return {"probs": probs, "labels": labels}

    def on_test_epoch_end(self) -> None:
        self.log_dict({**self.test_metrics.compute(), **self._per_class("test", self.test_per_class)})
        self.test_metrics.reset()

    def _per_class(self, stage: str, metric: MulticlassAccuracy | None) -> dict[str, torch.Tensor]:
        """``<stage>/class_acc/<name>`` for each class (computed, then reset); none for two classes."""
        if metric is None:
            return {}
        values = metric.compute()
        metric.reset()
        names = self.hparams.class_names
        return {f"{stage}/class_acc/{name}": value for name, value in zip(names, values, strict=True)}

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """``N x C`` class probabilities for each image (two classes: P(dog), P(cat) for the lesson's)."""
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.probabilities(inputs)

    def configure_optimizers(self):
        # fused: one kernel for all parameters instead of a Python loop over them; the same Adam maths,
        # and several times faster steps for the lesson's MLP on a CPU (docs/performance.md).
        fused = self.device.type in ("cpu", "cuda")
        hp = self.hparams
        make = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[hp.optimizer]
        momentum = {"momentum": 0.9, "nesterov": True} if hp.optimizer == "sgd" else {}
        groups = getattr(self.net, "param_groups", None)  # a network with a say (a fine-tune's top at its own rate)
        trainable = groups(hp.lr) if groups else [p for p in self.parameters() if p.requires_grad]
        optimizer = make(trainable, lr=hp.lr, weight_decay=hp.weight_decay, fused=fused, **momentum)
        if hp.scheduler == "none":
            return optimizer
        plan = schedules.build(hp.scheduler, optimizer, hp.lr, schedules.horizon(hp.scheduler, self.trainer))
        interval = schedules.INTERVAL[hp.scheduler]
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plan, "interval": interval}}

    def on_fit_start(self) -> None:
        if self.hparams.get("class_weights", "none") != "balanced":
            return
        labels = getattr(getattr(self.trainer.datamodule, "train_set", None), "labels", None)
        if labels is None:
            raise ConfigError("--model.class_weights balanced needs a DataModule whose train_set has labels.")
        counts = torch.bincount(labels, minlength=self.class_count).double()
        self.class_weight = (counts.sum() / (len(counts) * counts.clamp_min(1))).float().to(self.device)

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
