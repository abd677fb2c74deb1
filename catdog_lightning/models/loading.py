"""Loading a trained model from a checkpoint, safely: what predicting, evaluating, exporting and resuming share."""

from __future__ import annotations

import os

from ..allow_list import check_class_paths
from ..errors import ConfigError, reason
from ..storage.checkpoints import check_saved_image_size, first_nonfinite, read_checkpoint
from .classifier import CatDogClassifier


def check_loadable(saved: dict, ckpt_path: str | os.PathLike, allowed: tuple[str, ...] = ()) -> dict:
    """A (read) checkpoint's hyperparameters, once its image size, its format and its network's class_path are
    checked: what is needed before anything is built or imported from it."""
    check_saved_image_size(saved, ckpt_path)
    hparams = saved["hyper_parameters"]
    if "arch" in hparams or not isinstance(hparams.get("net"), dict):
        raise ConfigError(
            f"--ckpt_path {ckpt_path}: written before networks were a parameter (--model.net); retrain it with "
            "this version (its recipe's settings are in its run's config.yaml, renamed as docs/your-network.md says)."
        )
    check_class_paths(hparams, f"--ckpt_path {ckpt_path}", allowed)
    return hparams


def load_model(
    ckpt_path: str | os.PathLike, saved: dict | None = None, allowed: tuple[str, ...] = ()
) -> CatDogClassifier:
    """The LightningModule in ``ckpt_path``, loaded safely, in eval mode.

    Loading never runs code from the file (``weights_only=True``), and the network's class_path it records is
    data: imported only from Lightning, this package or a module of ``allowed`` (``--allow_modules``). A
    corrupt file, a pickle needing more than weights, or a checkpoint of another architecture (or of a
    catdog-lightning before networks were a parameter) raises :class:`ConfigError`. ``saved``: the checkpoint
    already read with :func:`read_checkpoint`, not to read it twice.
    """
    saved = saved if saved is not None else read_checkpoint(ckpt_path)
    hparams = check_loadable(saved, ckpt_path, allowed)
    try:
        model = CatDogClassifier(**hparams)
        model.load_state_dict(saved["state_dict"])
    except (TypeError, RuntimeError, ValueError, MemoryError, OverflowError) as exc:
        raise ConfigError(f"--ckpt_path {ckpt_path}: not a checkpoint of this model ({reason(exc)}).") from None
    if bool((model.standardize.std <= 0).any()):
        raise ConfigError(f"--ckpt_path {ckpt_path}: its input statistics hold a standard deviation of 0 or less.")
    # The network's weights and input statistics; metric states are not weights (the best-so-far starts at -inf).
    broken = first_nonfinite({"net": model.net.state_dict(), "standardize": model.standardize.state_dict()})
    if broken is not None:
        raise ConfigError(
            f"--ckpt_path {ckpt_path}: its weights are not finite (NaN or Inf in {broken}): the run diverged "
            "before this checkpoint was saved; use an earlier one, or retrain with a lower --model.lr."
        )
    return model.eval()
