"""Pictures for people: captioned image grids, a confusion matrix, and the TensorBoard callback using them."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tensorboard.compat.proto.summary_pb2 import Summary

from .data.features import extract_features

GOOD, BAD = (30, 140, 60), (200, 40, 40)


def caption_grid(
    images: Sequence[np.ndarray], captions: Sequence[str], ok: Sequence[bool], columns: int = 8, tile: int = 96
) -> Image.Image:
    """Tiles of ``images`` (H x W x 3 uint8) with a caption strip under each, green when ``ok`` else red."""
    font = ImageFont.load_default()
    strip = 14
    rows = max(1, -(-len(images) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + strip)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (pixels, caption, good) in enumerate(zip(images, captions, ok, strict=True)):
        x, y = (i % columns) * tile, (i // columns) * (tile + strip)
        sheet.paste(Image.fromarray(pixels).resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        draw.rectangle([x, y + tile, x + tile - 1, y + tile + strip - 1], fill=GOOD if good else BAD)
        draw.text((x + 2, y + tile + 1), caption, fill=(255, 255, 255), font=font)
    return sheet


def confusion_matrix_image(matrix: Sequence[Sequence[int]], title: str = "") -> Image.Image:
    """A 2 x 2 confusion matrix (rows: true dog, cat; columns: predicted dog, cat), shaded by share of its row."""
    font = ImageFont.load_default()
    cell, margin = 90, 70
    img = Image.new("RGB", (margin + 2 * cell + 10, margin + 2 * cell + 10), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((margin, 4), title, fill=(0, 0, 0), font=font)
    for c, name in enumerate(["predicted dog", "predicted cat"]):
        draw.text((margin + c * cell + 6, margin - 16), name, fill=(0, 0, 0), font=font)
    for r, name in enumerate(["true dog", "true cat"]):
        draw.text((4, margin + r * cell + cell // 2 - 6), name, fill=(0, 0, 0), font=font)
        total = max(1, sum(matrix[r]))
        for c in range(2):
            share = matrix[r][c] / total
            shade = int(255 - 170 * share)
            fill = (shade, shade, 255) if r == c else (255, shade, shade)
            box = [margin + c * cell, margin + r * cell, margin + (c + 1) * cell - 2, margin + (r + 1) * cell - 2]
            draw.rectangle(box, fill=fill)
            draw.text((box[0] + 8, box[1] + cell // 2 - 12), f"{matrix[r][c]}\n{share:.0%}", fill=(0, 0, 0), font=font)
    return img


def add_picture(writer, tag: str, img: Image.Image, step: int, photo: bool = False) -> None:
    """Log ``img`` as a TensorBoard image, encoded for speed: SummaryWriter.add_image spends ~70 ms
    compressing a PNG of photos, several % of an epoch here. Photos go as JPEG (~3 ms), drawings
    (flat colours, text) as quickly compressed PNG."""
    buffer = io.BytesIO()
    if photo:
        img.convert("RGB").save(buffer, format="JPEG", quality=90)
    else:
        img.convert("RGB").save(buffer, format="PNG", compress_level=1)
    encoded = Summary.Image(height=img.height, width=img.width, colorspace=3, encoded_image_string=buffer.getvalue())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)


class TensorBoardVisuals(L.Callback):
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

    def _writer(self, trainer: L.Trainer):
        logger = trainer.logger
        return getattr(logger, "experiment", None) if trainer.is_global_zero and logger is not None else None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        val = trainer.datamodule.val_set
        picks = torch.cat([torch.nonzero(val.labels == c).flatten()[: self.per_class] for c in (1, 0)])
        self._images, self._labels = val.take(picks), val.labels[picks]
        # A linear probe's backbone never changes: its features of these images are computed once, not every epoch.
        probe = pl_module.is_probe
        self._inputs = extract_features(self._images, pl_module.view_features) if probe else self._images.float() / 255
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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = self._writer(trainer)
        if writer is None or trainer.sanity_checking or self._images is None:
            return
        step = trainer.global_step
        with torch.no_grad():
            probs = torch.sigmoid(pl_module(self._inputs.to(pl_module.device))).cpu()
        pixels = [img.permute(1, 2, 0).numpy() for img in self._images]
        labels = ["cat" if y == 1 else "dog" for y in self._labels.tolist()]
        captions = [f"{name} P(cat)={p:.2f}" for name, p in zip(labels, probs.tolist(), strict=True)]
        ok = [(p > 0.5) == (y == 1) for p, y in zip(probs.tolist(), self._labels.tolist(), strict=True)]
        add_picture(writer, "val/predictions", caption_grid(pixels, captions, ok), step, photo=True)
        matrix = getattr(pl_module, "val_confusion_last", None)
        if matrix is not None:
            title = f"validation, epoch {trainer.current_epoch}"
            add_picture(writer, "val/confusion_matrix", confusion_matrix_image(matrix.tolist(), title), step)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = self._writer(trainer)
        outputs = getattr(pl_module, "test_outputs_last", None)
        if writer is not None and outputs is not None:
            labels, probs = outputs
            writer.add_pr_curve("test/pr_curve", labels, probs, trainer.global_step)
            writer.flush()
