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
from torchmetrics.classification import BinaryConfusionMatrix

from .drawing import caption_grid, confusion_matrix_image


class TensorBoardPictures(L.Callback):
    """The model graph at the start; once per validation epoch, a fixed grid of validation images
    captioned with true label and P(cat), and the validation confusion matrix; at test, a
    precision-recall curve. Only rank 0 writes.

    The grid shows the same images every epoch (the first ``per_class`` cats and dogs of the
    validation split), so it can be compared across epochs with TensorBoard's step slider.
    """

    def __init__(self, per_class: int = 8):
        self.per_class = per_class
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._inputs: torch.Tensor | None = None
        self._confusion = BinaryConfusionMatrix()
        self._test_probs, self._test_labels = CatMetric(), CatMetric()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for metric in (self._confusion, self._test_probs, self._test_labels):
            metric.to(pl_module.device)

    def _writer(self, trainer: L.Trainer):
        logger = trainer.logger
        return getattr(logger, "experiment", None) if trainer.is_global_zero and logger is not None else None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        val = trainer.datamodule.val_set
        picks = torch.cat([torch.nonzero(val.labels == c).flatten()[: self.per_class] for c in (1, 0)])
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
        step = trainer.global_step
        with torch.no_grad():
            probs = torch.sigmoid(pl_module.logits(self._inputs.to(pl_module.device))).cpu()
        pixels = [img.permute(1, 2, 0).numpy() for img in self._images]
        labels = ["cat" if y == 1 else "dog" for y in self._labels.tolist()]
        captions = [f"{name} P(cat)={p:.2f}" for name, p in zip(labels, probs.tolist(), strict=True)]
        ok = [(p > 0.5) == (y == 1) for p, y in zip(probs.tolist(), self._labels.tolist(), strict=True)]
        add_picture(writer, "val/predictions", caption_grid(pixels, captions, ok), step, photo=True)
        title = f"validation, epoch {trainer.current_epoch}"
        add_picture(writer, "val/confusion_matrix", confusion_matrix_image(matrix.tolist(), title), step)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._test_probs.update(outputs["probs"])
        self._test_labels.update(outputs["labels"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        probs, labels = self._test_probs.compute().cpu(), self._test_labels.compute().cpu()
        self._test_probs.reset()
        self._test_labels.reset()
        writer = self._writer(trainer)
        if writer is not None:
            writer.add_pr_curve("test/pr_curve", labels, probs, trainer.global_step)
            writer.flush()


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
