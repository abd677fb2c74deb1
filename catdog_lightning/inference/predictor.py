"""Use a trained model: ``load_classifier(ckpt).predict(paths)``.

Images go through the very decode path training used (same resize, RGB and EXIF handling, JPEG
draft mode as the checkpoint's data settings say), so a photo gets the pixels it would have had
as a training image.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..allow_list import allowed_modules
from ..classes import as_columns, prediction_text, probabilities
from ..data.decode import decode_many
from ..data.scan import find_images, printable
from ..errors import ConfigError, DataError
from ..models import CatDogClassifier
from ..models.features import FEATURE_BATCH
from ..models.loading import load_model
from ..storage.checkpoints import read_checkpoint
from ..storage.runs import DEFAULT_LOGS_DIR, resolve_checkpoint
from .locate import checkpoint_or_latest
from .predictions import Prediction, predictions_of, write_predictions


class Predictor:
    """A trained CatDogClassifier with the decode settings it was trained with: class probabilities for image
    files."""

    def __init__(self, model: CatDogClassifier, draft: bool = True, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.image_size = int(model.hparams.image_size)
        self.classes = tuple(model.hparams.class_names)
        self.draft, self.device = draft, device

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """``N x C`` class probabilities for ``N x 3 x S x S`` uint8 images (two classes: P(dog), P(cat))."""
        if self.model.backbone is not None:  # big activations: small batches run faster (see models/features.py)
            batch_size = min(batch_size, FEATURE_BATCH)
        out = [
            probabilities(self.model(chunk.to(self.device).float().div_(255)), len(self.classes)).cpu()
            for chunk in images.split(batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

    def predict(self, paths: Sequence[str | os.PathLike], batch_size: int = 256) -> list[Prediction]:
        """One :class:`Prediction` per image, in order; folders are searched recursively (as predict.py does);
        unreadable files get ``error`` instead of probabilities."""
        paths = find_images(paths)
        images, kept, failures = decode_many(paths, self.image_size, self.draft, desc="predicting")
        probs = self.probabilities(torch.from_numpy(images), batch_size).tolist()
        by_index = dict(zip(kept, probs, strict=True))
        reasons = {f.path: f.reason for f in failures}
        rows = [by_index.get(i) for i in range(len(paths))]
        return predictions_of(paths, rows, self.classes, [reasons.get(p) for p in paths])


class OnnxPredictor(Predictor):
    """:class:`Predictor` through an ONNX Runtime session of the export (see :mod:`.onnx_runtime`)."""

    def __init__(self, onnx_path: str | os.PathLike, image_size: int, classes: Sequence[str], draft: bool = True,
                 threads: int = 0):  # fmt: skip
        from .onnx_runtime import session

        self.session = session(onnx_path, threads)
        self.image_size, self.classes, self.draft, self.device = image_size, tuple(classes), draft, "cpu"

    def probabilities(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """``N x C`` class probabilities for ``N x 3 x S x S`` uint8 images."""
        out = [
            torch.from_numpy(self.session.run(None, {"images": chunk.numpy().astype(np.float32) / 255})[0])
            for chunk in images.split(batch_size)
        ]
        return as_columns(torch.cat(out).float(), len(self.classes)) if out else torch.empty(0, len(self.classes))


def load_classifier(
    ckpt_path: str | os.PathLike | None = None,
    device: str = "cpu",
    logs_dir: str | os.PathLike = DEFAULT_LOGS_DIR,
    backend: str = "torch",
    allowed: tuple[str, ...] = (),
) -> Predictor:
    """The model in ``ckpt_path`` (a file, ``last`` or ``best``; default: best.ckpt of the latest run under
    ``logs_dir``), loaded safely (see :func:`~catdog_lightning.models.loading.load_model`: ``allowed`` are the
    modules beyond this package its network may come from); with ``backend`` onnx
    or int8, its export on ONNX Runtime (see :mod:`.onnx_runtime`), the same ``predict`` and ``probabilities``."""
    from .onnx_runtime import check_backend, onnx_model

    check_backend(backend)
    path = resolve_checkpoint(ckpt_path, logs_dir)
    saved = read_checkpoint(path)
    draft = bool(saved.get("datamodule_hyper_parameters", {}).get("draft", True))
    model = load_model(path, saved, allowed)
    if backend == "torch":
        return Predictor(model, draft=draft, device=device)
    with onnx_model(path, backend, allowed) as onnx_path:  # the session holds the graph: the file can go
        return OnnxPredictor(onnx_path, int(model.hparams.image_size), model.hparams.class_names, draft)


def predict_command(args: dict) -> None:
    """scripts/predict.py: one line per image on stdout, skipped files on stderr, optionally a CSV/JSON file."""
    output = args.get("output")
    if output and Path(output).suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"--output {output}: use a .csv or .json file name.")
    missing = [p for p in args["paths"] if not Path(p).exists()]
    if missing:
        raise ConfigError(f"{missing[0]}: no such file or folder.")
    paths = find_images(args["paths"])
    if not paths:
        raise ConfigError(f"no image files (.jpg .jpeg .png .bmp .webp) in {' '.join(args['paths'])}.")
    ckpt = checkpoint_or_latest(args.get("ckpt_path"), args["logs_dir"])
    classifier = load_classifier(ckpt, backend=args.get("backend") or "torch", allowed=allowed_modules(args))
    predictions, classes = classifier.predict(paths, args["batch_size"]), classifier.classes
    for p in predictions:
        if p.probabilities is not None:
            print(f"{printable(p.path)}\t{prediction_text(list(p.probabilities.values()), classes)}")
    skipped = [p for p in predictions if p.probabilities is None]
    for p in skipped:
        print(f"skipped {printable(p.path)}: {p.error}", file=sys.stderr)
    print(f"{len(predictions) - len(skipped)} predicted, {len(skipped)} skipped", file=sys.stderr)
    if output:
        write_predictions(predictions, output, classes)
        print(f"wrote {output}", file=sys.stderr)
    if len(skipped) == len(predictions):
        raise DataError(f"none of the {len(predictions)} image file(s) could be read; see the lines above.")
