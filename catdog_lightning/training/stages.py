"""A trained checkpoint through one of Lightning's other stages: ``train.py validate|test|predict``.

The checkpoint's own data settings (updated by the ``--data.*`` flags given) build the DataModule, and an
evaluating Trainer (no logger, no checkpoints, every image once) runs the LightningModule's own steps, so
the numbers are the ones training reported. evaluate.py scores through the same pieces.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch

from ..allow_list import allowed_modules
from ..classes import prediction_text
from ..data import CatDogDataModule
from ..data.scan import printable
from ..errors import ConfigError, reason
from ..models.loading import load_model
from ..storage.checkpoints import (
    check_classes,
    check_image_size,
    read_checkpoint,
    saved_classes,
    saved_data_settings,
)
from ..storage.runs import DEFAULT_LOGS_DIR, resolve_checkpoint
from .settings import TRAINER_DEFAULTS
from .trainer import known_warnings_quiet, with_precision_resolved


def checkpoint_data(saved: dict, data: dict | None = None, own_data: bool = True) -> CatDogDataModule:
    """A DataModule with a (read) checkpoint's own data settings, updated by ``data``.

    The checkpoint's settings are checked before use, and the places they name are not followed: the decode
    cache goes where the command line (or the default) says, and built-in pictures the checkpoint says it
    trained on are used only where they already are, never drawn anew into the current folder. ``own_data``
    False: the caller scores other photos, so where the checkpoint's own are does not matter.
    """
    settings = {**saved_data_settings(saved), **(data or {})}
    try:
        datamodule = CatDogDataModule(**settings)
    except (TypeError, ValueError) as exc:  # a damaged or hand-made checkpoint's settings
        raise ConfigError(f"--ckpt_path: its data settings are unusable ({reason(exc)}).") from None
    check_image_size(datamodule.hparams.image_size, saved)
    if own_data and datamodule.hparams.data_dir is None and not datamodule.root.is_dir():
        raise ConfigError(
            f"--ckpt_path: it was trained on the built-in pictures, which are not in {datamodule.root} here; give "
            "--data.data_dir with labelled photos (or run from the folder it was trained in)."
        )
    return datamodule


def own_data(saved: dict, data: dict | None = None) -> CatDogDataModule:
    """:func:`checkpoint_data`, set up, with the checkpoint's classes checked against its data folder's."""
    datamodule = checkpoint_data(saved, data)
    datamodule.prepare_data()
    datamodule.setup("test")
    fix = "Score it on a folder of its classes (--data.data_dir)."
    check_classes(saved, datamodule.class_names, datamodule.place("train"), fix)
    return datamodule


def evaluator(trainer: dict, **options) -> L.Trainer:
    """A Trainer that only evaluates: no logger, no checkpoints, every image once (no distributed sampler)."""
    return L.Trainer(
        **with_precision_resolved(trainer)[0],
        logger=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        **options,
    )


def predicted_probabilities(
    ckpt_path: str | os.PathLike,
    saved: dict,
    datamodule: CatDogDataModule,
    evaluating: L.Trainer,
    allowed: tuple[str, ...] = (),
) -> torch.Tensor:
    """``N x C`` class probabilities of every image of the DataModule's test split, in order, from Lightning's
    ``trainer.predict``."""
    model = load_model(ckpt_path, saved, allowed)
    return torch.cat(evaluating.predict(model, datamodule=datamodule)).cpu().float()


def evaluate_checkpoint(
    ckpt_path: str | Path,
    data: dict | None = None,
    trainer: dict | None = None,
    stage: str = "test",
    allowed: tuple[str, ...] = (),
) -> dict:
    """The LightningModule's own metrics of a checkpoint on its test (or ``stage="validate"``: validation)
    images, under any Trainer (e.g. several DDP processes). The data settings are the checkpoint's, updated
    by ``data``."""
    saved = read_checkpoint(ckpt_path)
    evaluating = evaluator({**TRAINER_DEFAULTS, **(trainer or {})})
    run = evaluating.test if stage == "test" else evaluating.validate
    metrics = run(load_model(ckpt_path, saved, allowed), datamodule=own_data(saved, data), verbose=False)[0]
    return {k: float(v) for k, v in metrics.items()}


@known_warnings_quiet()
def stage_command(stage: str, flags: dict) -> None:
    """``train.py validate|test|predict --ckpt_path PATH|last|best``: one stage of a trained checkpoint.

    validate and test print the LightningModule's metrics; predict prints each test image's prediction (as
    predict.py does).
    """
    if not flags.get("ckpt_path"):
        raise ConfigError(f"{stage} needs --ckpt_path: a checkpoint file, last or best (of the latest run).")
    logs_dir = flags.get("logs_dir") or DEFAULT_LOGS_DIR
    ckpt = str(resolve_checkpoint(flags["ckpt_path"], logs_dir, flags.get("run_name")))
    trainer = {**TRAINER_DEFAULTS, "enable_progress_bar": False, **(flags.get("trainer") or {})}
    if stage in ("validate", "test"):
        metrics = evaluate_checkpoint(ckpt, flags.get("data"), trainer, stage, allowed_modules(flags))
        print(f"{stage} metrics of {ckpt}")
        for key, value in sorted(metrics.items()):
            print(f"  {key:<12} {value:.4f}")
        return
    saved = read_checkpoint(ckpt)
    datamodule = own_data(saved, flags.get("data"))
    probs = predicted_probabilities(ckpt, saved, datamodule, evaluator(trainer), allowed_modules(flags)).tolist()
    for path, row in zip(datamodule.test_set.paths, probs, strict=True):
        print(f"{printable(path)}\t{prediction_text(row, saved_classes(saved))}")
