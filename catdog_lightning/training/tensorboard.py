"""The TensorBoard callback: the model graph, a captioned prediction grid, the confusion matrix, the PR curve.

It computes what it draws itself, from its own forward passes (the grid) and from the probabilities the
validation and test steps return (the matrix, the curve), accumulated in its own torchmetrics so DDP
processes pool them. The model keeps no state for it.
"""

from __future__ import annotations

import io
import warnings

import lightning as L
import torch
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torchmetrics import CatMetric
from torchmetrics.classification import BinaryConfusionMatrix, MulticlassConfusionMatrix

from .drawing import caption_grid, confusion_matrix_image


class TensorBoardPictures(L.Callback):
    """The model graph at the start; once per validation epoch, a fixed grid of validation images
    captioned with the true class and the prediction, and the validation confusion matrix; at test, a
    precision-recall curve (one per class for three or more). Only rank 0 writes.

    The grid shows the same images every epoch (the first ``per_class`` cats and dogs of the
    validation split; of each class, fewer for many classes), so it can be compared across epochs with
    TensorBoard's step slider.
    """

    def __init__(self, per_class: int = 8):
        self.per_class = per_class
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._inputs: torch.Tensor | None = None
        self._confusion: BinaryConfusionMatrix | MulticlassConfusionMatrix | None = None
        self._test_probs, self._test_labels = CatMetric(), CatMetric()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        count = len(pl_module.hparams.class_names)
        self._confusion = BinaryConfusionMatrix() if count == 2 else MulticlassConfusionMatrix(count)
        for metric in (self._confusion, self._test_probs, self._test_labels):
            metric.to(pl_module.device)

    def _writer(self, trainer: L.Trainer):
        logger = trainer.logger
        return getattr(logger, "experiment", None) if trainer.is_global_zero and logger is not None else None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        val, count = trainer.datamodule.val_set, len(pl_module.hparams.class_names)
        each = self.per_class if count == 2 else max(2, 2 * self.per_class // count)
        order = (1, 0) if count == 2 else range(count)  # the lesson's grid: cats first
        picks = torch.cat([torch.nonzero(val.labels == c).flatten()[:each] for c in order])
        self._images, self._labels = val.take(picks), val.labels[picks]
        # Computed once: a linear probe's backbone never changes, so neither do its features of these images.
        self._inputs = pl_module.inputs_for(self._images)
        writer = self._writer(trainer)
        if writer is not None and trainer.global_step == 0:  # once per run, not again on resume
            with warnings.catch_warnings():  # TensorBoard's graph tracer is torch.jit.trace, now deprecated
                warnings.simplefilter("ignore", FutureWarning)
                # The plain network, not the LightningModule: its graph is what a reader wants to see.
                # add_graph switches the network to eval and back with .train(), which would put a frozen
                # backbone (kept in eval mode by the LightningModule) into training mode: restore every mode.
                modes = {module: module.training for module in pl_module.modules()}
                writer.add_graph(pl_module.network(), self._images[:1].to(pl_module.device).float() / 255)
                for module, training in modes.items():
                    module.training = training

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._confusion.update(outputs["probs"], outputs["labels"])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        matrix = self._confusion.compute().cpu()  # on every process: DDP pools the counts here
        self._confusion.reset()
        writer = self._writer(trainer)
        if writer is None or self._images is None:
            return
        step, classes = trainer.global_step, list(pl_module.hparams.class_names)
        with torch.no_grad():
            probs = pl_module.probabilities(self._inputs.to(pl_module.device)).cpu()
        pixels = [img.permute(1, 2, 0).numpy() for img in self._images]
        captions, ok = prediction_captions(probs, self._labels, classes)
        add_picture(writer, "val/predictions", caption_grid(pixels, captions, ok), step, photo=True)
        title = f"validation, epoch {trainer.current_epoch}"
        add_picture(writer, "val/confusion_matrix", confusion_matrix_image(matrix.tolist(), title, classes), step)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._test_probs.update(outputs["probs"])
        self._test_labels.update(outputs["labels"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        probs, labels = self._test_probs.compute().cpu(), self._test_labels.compute().cpu()
        self._test_probs.reset()
        self._test_labels.reset()
        writer = self._writer(trainer)
        if writer is None:
            return
        classes = list(pl_module.hparams.class_names)
        if len(classes) == 2:
            writer.add_pr_curve("test/pr_curve", labels, probs, trainer.global_step)
        else:  # each class against the rest
            for label, name in enumerate(classes):
                writer.add_pr_curve(f"test/pr_curve/{name}", labels == label, probs[:, label], trainer.global_step)
        writer.flush()


def prediction_captions(probs: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> tuple[list[str], list[bool]]:
    """A caption per image and whether its prediction is right: ``cat P(cat)=0.93`` for two classes (the true
    class and the probability of the second), ``hat>shoes 0.61`` (true, predicted and its probability) for more."""
    predicted = probs.argmax(1).tolist()
    truth = labels.tolist()
    if len(classes) == 2:
        captions = [f"{classes[y]} P({classes[1]})={p[1]:.2f}" for y, p in zip(truth, probs.tolist(), strict=True)]
    else:
        captions = [
            f"{classes[y]}" if y == k else f"{classes[y]}>{classes[k]} {float(p[k]):.2f}"
            for y, k, p in zip(truth, predicted, probs, strict=True)
        ]
    return captions, [y == k for y, k in zip(truth, predicted, strict=True)]


def add_picture(writer, tag: str, img: Image.Image, step: int, photo: bool = False) -> None:
    """Log ``img`` as a TensorBoard image, encoded for speed: SummaryWriter.add_image compresses a PNG of
    photos slowly enough to show in a small model's epoch time. Photos go as JPEG, drawings (flat colours,
    text) as quickly compressed PNG (measured: docs/performance.md)."""
    buffer = io.BytesIO()
    if photo:
        img.convert("RGB").save(buffer, format="JPEG", quality=90)
    else:
        img.convert("RGB").save(buffer, format="PNG", compress_level=1)
    encoded = Summary.Image(height=img.height, width=img.width, colorspace=3, encoded_image_string=buffer.getvalue())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)
