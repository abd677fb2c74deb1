"""``train.py lr_find``: Lightning's learning-rate finder (``Tuner.lr_find``) on a run's own data and model.

Lightning's tuner trains for a hundred steps while raising the learning rate exponentially, records the loss
at each, and suggests the rate where the loss falls fastest. This module only builds the run's DataModule
and model as ``train()`` would, and writes what the tuner found beside the runs: ``lr_find.png`` (the loss
against the rate, Lightning's plot) and ``lr_find.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from ..errors import ConfigError
from ..storage.atomic import atomic_write_text
from ..storage.runs import DEFAULT_LOGS_DIR, RunDirectory, next_run_name
from .fit import data_and_model, join_data_and_model
from .settings import DEFAULT_SEED, TRAINER_DEFAULTS
from .trainer import known_warnings_quiet, with_precision_resolved


@known_warnings_quiet()
def lr_find_command(flags: dict) -> dict:
    """Find a learning rate for the settings in ``flags``; print it and where the plot went."""
    from lightning.pytorch.tuner import Tuner

    if flags.get("ckpt_path"):
        raise ConfigError("lr_find starts from the recipe's starting weights, as a new run would: drop --ckpt_path.")
    logs_dir = Path(flags.get("logs_dir") or DEFAULT_LOGS_DIR)
    seed = int(flags.get("seed_everything", DEFAULT_SEED) or DEFAULT_SEED)
    datamodule, model = data_and_model(flags, seed)
    join_data_and_model(datamodule, model, None)
    trainer_cfg = {**TRAINER_DEFAULTS, **(flags.get("trainer") or {})}
    for key in ("callbacks", "logger", "max_epochs"):
        trainer_cfg.pop(key, None)
    trainer_cfg = with_precision_resolved(trainer_cfg)[0]
    trainer = L.Trainer(**trainer_cfg, logger=False, enable_checkpointing=False, use_distributed_sampler=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    found = Tuner(trainer).lr_find(model, datamodule=datamodule, min_lr=1e-6, max_lr=1.0, num_training=100)
    suggestion = found.suggestion()
    run = RunDirectory(logs_dir, flags.get("run_name") or next_run_name(logs_dir, "lr_find"))
    run.path.mkdir(parents=True, exist_ok=True)
    figure = found.plot(suggest=True)
    figure.savefig(run.path / "lr_find.png", dpi=90, bbox_inches="tight")
    result = {"suggested_lr": suggestion, "lr": found.results["lr"], "loss": found.results["loss"]}
    atomic_write_text(run.path / "lr_find.json", json.dumps(result, indent=2))
    rate = "none (the loss never fell: try other settings)" if suggestion is None else f"{suggestion:.3g}"
    print(f"suggested learning rate: {rate}   (now --model.lr {model.hparams.lr:g})")
    print(f"loss against learning rate: {run.path / 'lr_find.png'}")
    return result
