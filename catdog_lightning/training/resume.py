"""Which run a training continues, and with which settings.

A new run gets the next free directory (or ``--run_name``). A resumed one (``--ckpt_path last`` or a file)
continues in its own directory with its saved ``config.yaml`` as the base, the flags given now on top,
and the settings that shape its weights refused if they change.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml
from lightning.pytorch.utilities import rank_zero_only

from ..errors import ConfigError
from ..models.loading import load_model
from ..storage.checkpoints import read_checkpoint
from ..storage.runs import RunDirectory, check_run_name, resolve_checkpoint

# Settings a resumed run cannot change: its weights have this shape.
SHAPE_KEYS = (
    ("model", "arch"),
    ("model", "hidden_dims"),
    ("model", "activation"),
    ("model", "channels"),
    ("model", "convs_per_block"),
    ("data", "image_size"),
    ("data", "normalize"),  # the statistics live in the weights' checkpoint, fixed by the first run
    ("model", "unfreeze_at_epoch"),  # a probe's optimiser holds the head alone; a fine-tune's, the backbone too
)
RUN_NAME_ENV = "CATDOG_RUN_NAME"  # how DDP processes started by Lightning learn the run directory


def merge(base: dict, override: dict) -> dict:
    """``base`` updated by ``override``, recursively for nested sections."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_resume(config: dict, logs_dir: Path) -> tuple[Path, RunDirectory, dict]:
    """The checkpoint to resume, its run, and the run's saved config as the base for this one."""
    ckpt_arg, run_name = str(config["ckpt_path"]), config.get("run_name")
    if ckpt_arg == "best":
        raise ConfigError("--ckpt_path best: a run resumes from where it stopped, --ckpt_path last (or give a file).")
    ckpt = resolve_checkpoint(ckpt_arg, logs_dir, run_name)
    if ckpt_arg == "last":
        run = RunDirectory.containing(ckpt)
    else:
        run = RunDirectory.owning(ckpt) or (RunDirectory(logs_dir, run_name) if run_name else None)
    saved = read_checkpoint(ckpt)
    load_model(ckpt, saved)  # refuses, in one line, a checkpoint that does not build this model (before Lightning)
    if run is not None and run.config_file.is_file():
        base = read_saved_config(run)
    else:  # a checkpoint from elsewhere: its own hyperparameters say what it is
        base = {"model": dict(saved["hyper_parameters"]), "data": dict(saved.get("datamodule_hyper_parameters", {}))}
        run = run or RunDirectory.next_version(logs_dir)
    for section, key in SHAPE_KEYS:
        given = config.get(section, {}).get(key)
        had = base.get(section, {}).get(key)
        if given is not None and had is not None and given != had:
            raise ConfigError(
                f"--{section}.{key} {given} differs from the run being resumed ({had}); a resumed run keeps "
                "its architecture and input statistics. Drop the flag, or start a new run without --ckpt_path."
            )
    return ckpt, run, base


def read_saved_config(run: RunDirectory) -> dict:
    """A run's ``config.yaml``; one that is empty, cut, malformed or not a mapping is refused, never replaced
    by defaults (which would train something else and write that into the file for good)."""
    path = run.config_file
    fix = (
        "restore it (every setting is also in the checkpoint's hyperparameters), or resume from the file alone: "
        f"--ckpt_path {run.last_ckpt} with your flags"
    )
    try:
        saved = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path} cannot be read ({type(exc).__name__}); {fix}.") from None
    if not isinstance(saved, dict) or not all(isinstance(saved.get(part), dict) for part in ("model", "data")):
        raise ConfigError(f"{path} is empty or damaged (no data and model settings); {fix}.")
    return saved


def is_main_process() -> bool:
    """Before fit, DDP ranks are known only from the environment the launcher set."""
    return rank_zero_only.rank == 0


def resolve_run(config: dict, logs_dir: Path) -> tuple[Path | None, RunDirectory, dict]:
    """The checkpoint to resume (if any), the run directory, and the config with saved settings merged in."""
    # Under DDP, Lightning re-runs this script in one process per extra device; they must join the
    # run directory the first process chose, not compute the next version_N themselves.
    if not is_main_process() and os.environ.get(RUN_NAME_ENV) and not config.get("run_name"):
        config = {**config, "run_name": os.environ[RUN_NAME_ENV]}
    if config.get("run_name") is not None:
        check_run_name(str(config["run_name"]))
    if config.get("ckpt_path"):
        ckpt, run, base = _resolve_resume(config, logs_dir)
        return ckpt, run, merge(base, {k: v for k, v in config.items() if k != "ckpt_path"})
    run = RunDirectory(logs_dir, config["run_name"]) if config.get("run_name") else RunDirectory.next_version(logs_dir)
    if run.last_ckpt.exists():  # checked again, under the run's lock, when the directory is claimed
        raise ConfigError(
            f"--run_name {run.name}: {run.path} already holds a run; resume it with "
            f"--ckpt_path last --run_name {run.name}, or pick another name."
        )
    return None, run, config
