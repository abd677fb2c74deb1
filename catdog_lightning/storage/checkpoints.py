"""Reading checkpoints safely, writing them atomically.

A checkpoint is a pickle, and unpickling can run code. Ours hold only tensors and primitives, so they
load with ``weights_only=True``; anything needing more is refused rather than executed.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ..classes import CATDOG_CLASSES
from ..errors import ConfigError
from .atomic import atomic_write


def saved_data_settings(saved: dict) -> dict:
    """A (read) checkpoint's data settings, less where its decode cache was: a path it names is never followed."""
    return {k: v for k, v in saved.get("datamodule_hyper_parameters", {}).items() if k != "cache_dir"}


MAX_IMAGE_SIZE = 1024  # px; 1,000 photos at 1024 px are 3 GB decoded. Data and checkpoints alike.


def check_saved_image_size(saved: dict, ckpt_path: str | os.PathLike) -> int:
    """A (read) checkpoint's image size, refused in one line when no model is trained at it."""
    size = saved.get("hyper_parameters", {}).get("image_size") if isinstance(saved, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"--ckpt_path {ckpt_path}: its image size {size!r} is not one a model is trained at (8 to "
            f"{MAX_IMAGE_SIZE} px); the checkpoint is damaged or hand-made."
        )
    return size


def check_image_size(data_size: int | None, saved: dict, source: str = "--ckpt_path") -> None:
    """Data settings and a checkpoint's model agree on the image size (a damaged or hand-made file may not)."""
    model_size = saved.get("hyper_parameters", {}).get("image_size")
    if None not in (data_size, model_size) and data_size != model_size:
        raise ConfigError(
            f"{source}: its data settings say {data_size} px but its model takes {model_size} px; the checkpoint "
            "is damaged or hand-made."
        )


def saved_classes(saved: dict) -> list[str]:
    """A (read) checkpoint's classes in label order; the lesson's for one saved before models had classes."""
    return [str(name) for name in saved.get("hyper_parameters", {}).get("class_names", CATDOG_CLASSES)]


def check_classes(saved: dict, classes, folder: str, fix: str) -> None:
    """A checkpoint's classes equal those ``folder`` holds now, or one line saying both and ``fix``."""
    if saved_classes(saved) != list(classes):
        raise ConfigError(
            f"--ckpt_path: its model knows the classes {', '.join(saved_classes(saved))}; {folder} now holds "
            f"{', '.join(classes)}. {fix}"
        )


def read_checkpoint(path: str | os.PathLike, flag: str = "--ckpt_path") -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, or a :class:`ConfigError` naming the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{flag} {path}: no such file.")
    try:
        with warnings.catch_warnings():  # torch's own notes on odd pickles; the verdict below says it all
            warnings.simplefilter("ignore")
            # Mapped, not read: the tensors' bytes are read only where used (a run's epoch, its classes cost
            # milliseconds, not a copy of every weight), and the several looks a resume takes share one page cache.
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        # An object to construct: code would run to unpickle it (torch says "Unsupported global" or, since
        # 2.14, "unsupported GLOBAL").
        if "unsupported global" in str(exc).lower():
            raise ConfigError(
                f"{flag} {path}: refused, it holds Python objects beyond weights and plain values, "
                "and loading it could run code. Use a checkpoint written by catdog-lightning."
            ) from None
        raise ConfigError(f"{flag} {path}: not a readable checkpoint (corrupt or truncated).") from None
    except Exception:
        raise ConfigError(f"{flag} {path}: not a readable checkpoint (corrupt or truncated).") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ConfigError(f"{flag} {path}: not a catdog-lightning checkpoint (no state_dict/hyper_parameters).")
    return ckpt


def first_nonfinite(tree: object, key: str = "") -> str | None:
    """The key of the first floating-point tensor holding NaN or Inf in a nested dict/list of tensors, or None."""
    if isinstance(tree, torch.Tensor):
        return key if tree.is_floating_point() and not bool(tree.isfinite().all()) else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    for name, value in items:
        found = first_nonfinite(value, f"{key}.{name}" if key else str(name))
        if found is not None:
            return found
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, fsynced, then renamed over the old one.

    A process killed mid-save leaves the previous ``last.ckpt`` intact and loadable.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write(path, lambda fh: torch.save(checkpoint, fh))
