"""Use a trained model: ``load_classifier(ckpt).predict(paths)``.

Images go through the very decode path training used (same resize, RGB and EXIF handling, JPEG
draft mode as the checkpoint's data settings say), so a photo gets the pixels it would have had
as a training image.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import read_checkpoint
from .data.decode import decode_many
from .data.features import CHUNK as FEATURE_CHUNK
from .errors import ConfigError, DataError
from .models import CatDogClassifier
from .runs import DEFAULT_LOGS_DIR, find_checkpoint


@dataclass(frozen=True)
class Prediction:
    path: str
    p_cat: float | None  # None when the file could not be read
    label: str | None  # "cat" (P(cat) > 0.5) or "dog"
    error: str | None = None


def default_checkpoint(logs_dir: str | os.PathLike = DEFAULT_LOGS_DIR) -> Path:
    """``best.ckpt`` of the most recent run under ``logs_dir``."""
    ckpt = find_checkpoint(logs_dir, "best")
    if ckpt is None:
        raise ConfigError(
            f"no trained run under {logs_dir}/ to take best.ckpt from; train one first "
            "(make train) or pass --ckpt_path."
        )
    return ckpt


def checkpoint_or_latest(ckpt_path: str | None, logs_dir: str | os.PathLike = DEFAULT_LOGS_DIR) -> str:
    """``ckpt_path``, or the latest run's best.ckpt (saying so on stderr) when none is given."""
    if ckpt_path:
        return str(ckpt_path)
    ckpt = str(default_checkpoint(logs_dir))
    print(f"Using {ckpt} (the most recent run's best checkpoint)", file=sys.stderr)
    return ckpt


class Classifier:
    """A trained CatDogClassifier plus the data settings it was trained with."""

    def __init__(self, model: CatDogClassifier, draft: bool = True, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.image_size = int(model.hparams.image_size)
        self.draft, self.device = draft, device

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """P(cat) for ``N x 3 x S x S`` uint8 images."""
        if self.model.backbone is not None:  # big activations: small batches run faster (see data/features.py)
            batch_size = min(batch_size, FEATURE_CHUNK)
        out = [
            torch.sigmoid(self.model(chunk.to(self.device).float().div_(255))).cpu()
            for chunk in images.split(batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0)

    def predict(self, paths: Sequence[str | os.PathLike], batch_size: int = 256) -> list[Prediction]:
        """One :class:`Prediction` per image, in order; folders are searched recursively (as predict.py does);
        unreadable files get ``error`` instead of P(cat)."""
        from .data.scan import find_images

        paths = find_images(paths)
        images, kept, failures = decode_many(paths, self.image_size, self.draft, desc="predicting")
        probs = self.probabilities(torch.from_numpy(images), batch_size).tolist()
        by_index = dict(zip(kept, probs, strict=True))
        reasons = {f.path: f.reason for f in failures}
        return [
            Prediction(p, by_index[i], "cat" if by_index[i] > 0.5 else "dog")
            if i in by_index
            else Prediction(p, None, None, reasons.get(p, "unreadable"))
            for i, p in enumerate(paths)
        ]


def load_model(ckpt_path: str | os.PathLike, saved: dict | None = None) -> CatDogClassifier:
    """The LightningModule in ``ckpt_path``, loaded safely.

    Loading never runs code from the file (``weights_only=True``); a corrupt file, a pickle needing
    more than weights, or a checkpoint of another architecture raises :class:`ConfigError`. ``saved``: the
    checkpoint already read with :func:`read_checkpoint`, not to read it twice.
    """
    saved = saved if saved is not None else read_checkpoint(ckpt_path)
    try:
        model = CatDogClassifier(**saved["hyper_parameters"])
        model.on_load_checkpoint(saved)  # what older checkpoints lack, as load_from_checkpoint fills it in
        model.load_state_dict(saved["state_dict"])
    except (TypeError, RuntimeError, ValueError, MemoryError, OverflowError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ConfigError(f"--ckpt_path {ckpt_path}: not a checkpoint of this model ({reason}).") from None
    broken = [
        name for name, value in model.state_dict().items() if value.is_floating_point() and not value.isfinite().all()
    ]
    if broken:
        raise ConfigError(
            f"--ckpt_path {ckpt_path}: its weights are not finite (NaN or Inf in {broken[0]}): the run diverged "
            "before this checkpoint was saved; use an earlier one, or retrain with a lower --model.lr."
        )
    return model.eval()


def load_classifier(ckpt_path: str | os.PathLike | None = None, device: str = "cpu") -> Classifier:
    """The model in ``ckpt_path`` (default: best.ckpt of the latest run), loaded safely (see :func:`load_model`)."""
    path = Path(ckpt_path) if ckpt_path else default_checkpoint()
    draft = bool(read_checkpoint(path).get("datamodule_hyper_parameters", {}).get("draft", True))
    return Classifier(load_model(path), draft=draft, device=device)


def predict_command(args: dict) -> None:
    """scripts/predict.py: one line per image on stdout, skipped files on stderr, optionally a CSV/JSON file."""
    from .data.scan import find_images
    from .reports import write_predictions

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
    predictions = load_classifier(ckpt).predict(paths, args["batch_size"])
    for p in predictions:
        if p.p_cat is not None:
            print(f"{p.path}\t{p.p_cat:.4f}\t{p.label}")
    skipped = [p for p in predictions if p.p_cat is None]
    for p in skipped:
        print(f"skipped {p.path}: {p.error}", file=sys.stderr)
    print(f"{len(predictions) - len(skipped)} predicted, {len(skipped)} skipped", file=sys.stderr)
    if output:
        write_predictions(predictions, output)
        print(f"wrote {output}", file=sys.stderr)
    if len(skipped) == len(predictions):
        raise DataError(f"none of the {len(predictions)} image file(s) could be read; see the lines above.")
