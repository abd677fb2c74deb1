"""Which run a training continues, and with which settings.

A new run gets the next free directory (or ``--run_name``). A resumed one (``--ckpt_path last`` or a file)
continues in its own directory with its saved ``config.yaml`` as the base, the flags given now on top,
and the settings that shape its weights refused if they change.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from ..errors import ConfigError
from ..models.loading import load_model
from ..models.nets import expand
from ..storage.checkpoints import check_image_size, first_nonfinite, read_checkpoint, saved_data_settings
from ..storage.runs import RunDirectory, check_run_name, resolve_checkpoint
from ..storage.yaml_files import read_yaml_file
from .settings import check_settings_file

# Settings a resumed run cannot change, as a flag or in its config.yaml: its weights have this shape, or its
# photos were split this way (another split would validate on photos it trained on).
FIXED_KEYS = (
    ("data", "image_size"),
    ("data", "normalize"),  # the statistics live in the weights' checkpoint, fixed by the first run
    ("data", "split_seed"),
    ("data", "val_fraction"),
    ("data", "test_fraction"),
)
# And the network: its class and every argument but these, which shape no weight (a probe's optimiser holds the
# head alone, a fine-tune's the backbone too: unfreeze_at_epoch stays fixed with the rest; the MLP has a layer
# for each dropout, so that stays fixed too).
RESUMABLE_NET_ARGS = ("weights", "backbone_lr_ratio", "finetune_blocks", "feature_precision")


def fixed_settings(config: dict) -> dict:
    """The settings a resumed run keeps, of those ``config`` holds, dotted (model.net.init_args.hidden_dims)."""
    found = {
        f"{section}.{key}": config[section][key]
        for section, key in FIXED_KEYS
        if isinstance(config.get(section), dict) and key in config[section]
    }
    net = (config.get("model") or {}).get("net")
    if net is not None:
        partial = isinstance(net, dict) and "class_path" not in net  # only init_args given: the class is the run's
        spec = {"init_args": net.get("init_args") or {}} if partial else expand(net)
        if "class_path" in spec:
            found["model.net.class_path"] = spec["class_path"]
        found |= {f"model.net.init_args.{k}": v for k, v in spec["init_args"].items() if k not in RESUMABLE_NET_ARGS}
    return found


RUN_NAME_ENV = "CATDOG_RUN_NAME"  # how DDP processes started by Lightning learn the run directory


def merge(base: dict, override: dict) -> dict:
    """``base`` updated by ``override``, recursively for nested sections; a network of another class replaces
    the base's whole (its init_args were the other class's)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "net" and not same_class(out.get(key), value):
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def same_class(net, other) -> bool:
    """Whether ``other`` names no class, or the class (and backbone) of ``net``, however either is written."""
    if not isinstance(other, str) and not (isinstance(other, dict) and other.get("class_path")):
        return True
    if net is None:
        return False
    ours, theirs = expand(net), expand(other)
    archs = ours["init_args"].get("arch"), theirs["init_args"].get("arch")  # a backbone, where either says
    same = ours["class_path"].rpartition(".")[2] == theirs["class_path"].rpartition(".")[2]
    return same and (None in archs or archs[0] == archs[1])


def _resolve_resume(config: dict, logs_dir: Path, allowed: tuple[str, ...]) -> tuple[Path, RunDirectory, dict]:
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
    check_resumable(saved, ckpt)
    # Refuses, in one line, a checkpoint that does not build this model or names a class not allowed (before Lightning).
    load_model(ckpt, saved, allowed)
    broken = first_nonfinite(saved.get("optimizer_states", []), "optimizer_states")
    if broken is not None:
        raise ConfigError(
            f"--ckpt_path {ckpt}: its optimiser state is not finite (NaN or Inf in {broken}): the run diverged "
            "before this checkpoint was saved; start again with a lower --model.lr."
        )
    if run is not None and run.config_file.is_file():
        base = read_saved_config(run, allowed)
        _check_against_checkpoint(base, saved, run.config_file, ckpt)
        # Where the decode cache goes is the command line's (or the default): a run folder's file never moves it.
        base["data"] = {k: v for k, v in (base.get("data") or {}).items() if k != "cache_dir"}
    else:  # a checkpoint from elsewhere: its own hyperparameters say what it is (not where its cache was)
        base = {"model": dict(saved["hyper_parameters"]), "data": saved_data_settings(saved)}
        run = run or RunDirectory.next_version(logs_dir)
    check_image_size(base["data"].get("image_size"), saved, f"--ckpt_path {ckpt}")
    had = fixed_settings(base)
    for key, given in fixed_settings(config).items():
        if given is not None and had.get(key) is not None and given != had[key]:
            raise ConfigError(
                f"--{key} {given} differs from the run being resumed ({had[key]}); a resumed run keeps "
                "its architecture and input statistics. Drop the flag, or start a new run without --ckpt_path."
            )
    return ckpt, run, base


def check_resumable(saved: dict, ckpt: Path) -> None:
    """What Lightning restores from a checkpoint, checked for its shape first: a damaged or hand-made one is
    one line, not a traceback from inside the Trainer."""
    problem = None
    for key in ("epoch", "global_step"):
        if not isinstance(saved.get(key), int) or isinstance(saved.get(key), bool) or saved[key] < 0:
            problem = f"its {key} is {saved.get(key)!r}, not a count"
    for key in ("callbacks", "loops"):
        if not isinstance(saved.get(key), dict) or not all(isinstance(v, dict) for v in saved[key].values()):
            problem = f"its {key} are missing or damaged"
    optimizers = saved.get("optimizer_states")
    if not isinstance(optimizers, list) or not all(
        isinstance(o, dict) and isinstance(o.get("state"), dict) and isinstance(o.get("param_groups"), list)
        for o in optimizers
    ):
        problem = "its optimiser state is missing or damaged (a weights-only file cannot be resumed)"
    if not isinstance(saved.get("lr_schedulers", []), list):
        problem = "its learning-rate schedule state is damaged"
    if problem:
        raise ConfigError(
            f"--ckpt_path {ckpt}: cannot be resumed: {problem}. Resume from another checkpoint, or start a new run "
            "(predict.py and evaluate.py can still use its weights)."
        )


def read_saved_config(run: RunDirectory, allowed: tuple[str, ...] = ()) -> dict:
    """A run's ``config.yaml``, checked like flags (see :func:`check_settings_file`) before anything uses it.

    One that is empty, cut, malformed or not a mapping is refused, never replaced by defaults (which would
    train something else and write that into the file for good)."""
    path = run.config_file
    fix = (
        "restore it (every setting is also in the checkpoint's hyperparameters), or resume from the file alone: "
        f"--ckpt_path {run.last_ckpt} with your flags"
    )
    try:
        saved = read_yaml_file(path)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {fix}.".replace(".;", ";")) from None
    if not isinstance(saved, dict) or not all(isinstance(saved.get(part), dict) for part in ("model", "data")):
        raise ConfigError(f"{path} is empty or damaged (no data and model settings); {fix}.")
    check_settings_file(saved, str(path), allowed)
    return saved


def _check_against_checkpoint(base: dict, saved: dict, path: Path, ckpt: Path) -> None:
    """A config.yaml edited since its checkpoint was written: the settings a flag may not change may not
    change there either."""
    recorded = fixed_settings(
        {"model": saved["hyper_parameters"], "data": saved.get("datamodule_hyper_parameters", {})}
    )
    for key, value in fixed_settings(base).items():
        if key in recorded and value != recorded[key]:
            raise ConfigError(
                f"{path}: {key} is {value!r} there but {recorded[key]!r} in {ckpt}; "
                "a resumed run keeps its architecture, input statistics and split. Put the value back, or start "
                "a new run."
            )


def is_main_process() -> bool:
    """Before fit, DDP ranks are known only from the environment the launcher set: Lightning reads the global
    rank (RANK from torchrun, SLURM_PROCID, LOCAL_RANK), and a node started by hand says its NODE_RANK."""
    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") in ("", "0")


def resolve_run(config: dict, logs_dir: Path, allowed: tuple[str, ...] = ()) -> tuple[Path | None, RunDirectory, dict]:
    """The checkpoint to resume (if any), the run directory, and the config with saved settings merged in."""
    # Under DDP, Lightning re-runs this script in one process per extra device; they must join the
    # run directory the first process chose, not compute the next version_N themselves.
    if not is_main_process() and os.environ.get(RUN_NAME_ENV) and not config.get("run_name"):
        config = {**config, "run_name": os.environ[RUN_NAME_ENV]}
    if config.get("run_name") is not None:
        check_run_name(str(config["run_name"]))
    if config.get("ckpt_path"):
        ckpt, run, base = _resolve_resume(config, logs_dir, allowed)
        return ckpt, run, merge(base, {k: v for k, v in config.items() if k != "ckpt_path"})
    run = RunDirectory(logs_dir, config["run_name"]) if config.get("run_name") else RunDirectory.next_version(logs_dir)
    if run.last_ckpt.exists():  # checked again, under the run's lock, when the directory is claimed
        raise ConfigError(
            f"--run_name {run.name}: {run.path} already holds a run; resume it with "
            f"--ckpt_path last --run_name {run.name}, or pick another name."
        )
    return None, run, config
