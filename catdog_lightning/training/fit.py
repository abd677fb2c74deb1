"""One function runs a whole training: ``train(config) -> metrics``.

It joins data and models (the data's statistics and a probe's backbone features), builds the Trainer
with its checkpoints and TensorBoard logger in the run directory that :mod:`.resume` chose, fits, tests
the best (or last) checkpoint and writes ``metrics.json``. ``scripts/train.py`` only parses flags and calls
it; tests call it directly. (Over 250 lines: the start, the fit and the test of a run, and what each fault
or signal during them becomes, read best in one place; the Trainer itself is built in :mod:`.trainer`.)
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import time
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..data import CatDogDataModule
from ..errors import ConfigError, Interrupted
from ..models import CatDogClassifier
from ..models.nets import short_name
from ..storage.atomic import atomic_write_text, remove_stale_temporaries
from ..storage.checkpoints import check_classes, read_checkpoint
from ..storage.runs import DEFAULT_LOGS_DIR, RunDirectory, claim
from .callbacks import (
    Diverged,
    EpochSeeder,
    FiniteLoss,
    FitClock,
    SafeStops,
    StopRequested,
    TrainingInterrupted,
    signals_raise,
)
from .resume import RUN_NAME_ENV, is_main_process, resolve_run
from .settings import DEFAULT_SEED, LINKS, RENAMED, TRAINER_DEFAULTS
from .trainer import (
    BEST_MODE,
    build_trainer,
    known_warnings_quiet,
    with_precision_resolved,
    write_hparams_summary,
)


def _results_table(metrics: dict) -> str:
    name, epoch, last = Path(metrics["tested_checkpoint"]).name, metrics["tested_epoch"], metrics["epochs_trained"] - 1
    best_by, score = metrics["best_by"], metrics[metrics["best_by"]]
    rank = "highest" if best_by == "val/acc" else "lowest"
    why = f"the {rank} {best_by}, {score:.4f}" if epoch == metrics["best_epoch"] else "the end of training"
    rows = [
        ("tested", f"{name}: epoch {epoch} of 0-{last}, {why}"),
        ("test/acc", f"{metrics['test/acc']:.4f}"),
        ("test/f1", f"{metrics['test/f1']:.4f}"),
        ("test/auroc", f"{metrics['test/auroc']:.4f}"),
        *([("test/top5", f"{metrics['test/top5_acc']:.4f}")] if "test/top5_acc" in metrics else []),
        ("run dir", metrics["run_dir"]),
        ("watch", f"tensorboard --logdir {Path(metrics['run_dir']).parent}"),
    ]
    per_class = {k.rpartition("/")[2]: v for k, v in metrics.items() if k.startswith("test/class_acc/")}
    if per_class:  # three classes or more: f1 and auroc are macro averages; each class's accuracy after them
        rows.insert(-2, ("per class", ", ".join(f"{name} {value:.3f}" for name, value in per_class.items())))
    return "\n".join(["", "Results"] + [f"  {k:<11} {v}" for k, v in rows])


def _count_flag(config: dict, name: str) -> int:
    """A top-level count flag where 0 means off."""
    value = int(config.get(name) or 0)
    if value < 0:
        raise ConfigError(f"--{name} must be 0 (off) or more, got {value}.")
    return value


def join_data_and_model(datamodule: CatDogDataModule, model: CatDogClassifier, ckpt: Path | None) -> tuple[float, str]:
    """Hand the data's statistics and the starting weights to the model, and a probe's features to the data.

    Returns the seconds spent on backbone features and a line about them ("" when there are none).
    """
    if getattr(model.net, "input_statistics", None) and datamodule.hparams.normalize:
        raise ConfigError(
            f"--data.normalize: --model.net {short_name(model.hparams.net)} standardises with the statistics its "
            "weights were trained with (ImageNet's); drop the flag."
        )
    if ckpt is not None:  # resuming: fit restores weights and statistics from the checkpoint
        saved = read_checkpoint(ckpt)
        fix = "Put the class folders back as they were, or start a new run."
        check_classes(saved, model.hparams.class_names, datamodule.place("train"), fix)
        if model.caches_features:  # ...but cached features are computed before fit, from the same weights
            model.load_state_dict(saved["state_dict"])  # (resume.resolve_run checked it builds this model)
    else:
        # --data.normalize: the training split's statistics become part of the model (and its checkpoints).
        if datamodule.hparams.normalize:
            model.standardize.set_statistics(*datamodule.channel_stats())
        if load := getattr(model.net, "load_pretrained_weights", None):
            load()
    if not model.caches_features:
        return 0.0, ""
    if (line := model.feature_precision_line()) and is_main_process():  # before the work, which may be long
        print(line, flush=True)
    start = time.perf_counter()
    note = datamodule.use_features(model.features_of, model.feature_key())
    return time.perf_counter() - start, note


def resolved_settings(config: dict) -> dict:
    """The top-level settings, checked and with their defaults (what config.yaml records beside data and model)."""
    seed = config.get("seed_everything", DEFAULT_SEED)
    seed = DEFAULT_SEED if seed is None else int(seed)
    if not 0 <= seed < 2**32:
        raise ConfigError(f"--seed_everything must be between 0 and 2**32 - 1 (NumPy's seeds), got {seed}.")
    test_checkpoint = config.get("test_checkpoint") or "best"
    if test_checkpoint not in ("best", "last"):
        raise ConfigError(f"--test_checkpoint must be best or last, got {test_checkpoint!r}.")
    settings = {
        "trainer": {**TRAINER_DEFAULTS, **(config.get("trainer") or {})},
        "seed_everything": seed,
        "checkpoint_every_n_steps": _count_flag(config, "checkpoint_every_n_steps"),
        "log_images": bool(config.get("log_images", True)),
        "early_stopping_patience": _count_flag(config, "early_stopping_patience"),
        "test_checkpoint": test_checkpoint,
        "best_by": config.get("best_by") or "val/acc",
    }
    if settings["best_by"] not in BEST_MODE:
        raise ConfigError(f"--best_by must be one of {', '.join(BEST_MODE)}, got {settings['best_by']!r}.")
    max_epochs = settings["trainer"].get("max_epochs")
    if max_epochs is not None and int(max_epochs) != -1 and int(max_epochs) < 1:
        raise ConfigError(
            f"--trainer.max_epochs must be at least 1 (or -1: until stopped), got {max_epochs}: a run that trains "
            "no epoch has no checkpoint to test."
        )
    return settings


def check_settings(config: dict) -> None:
    """Every value of ``config`` checked as a run would check it, without reading a photo or a run folder: the
    top-level settings, the DataModule's and (when any is given) the model's ranges. A sweep checks each end of
    its ranges this way before its first trial."""
    resolved_settings(config)
    data = CatDogDataModule(**dict(config.get("data") or {}))
    if config.get("model"):
        refuse_renamed(config["model"])
        CatDogClassifier(**{**config["model"], "image_size": data.hparams.image_size})  # classes: the lesson's


def refuse_renamed(model: dict) -> None:
    """A settings dict of before the network was a parameter of its own: one line naming the new setting."""
    for key in model:
        if f"model.{key}" in RENAMED:
            raise ConfigError(f"model.{key} is now {RENAMED[f'model.{key}']}; see docs/your-network.md.")


def linked(datamodule: CatDogDataModule) -> dict:
    """The model's arguments that follow the data (settings.LINKS: the image size, the classes)."""
    return {target: datamodule.hparams[source] if when == "parse" else getattr(datamodule, source)
            for source, target, when in LINKS}  # fmt: skip


def data_and_model(config: dict, seed: int) -> tuple[CatDogDataModule, CatDogClassifier]:
    """The run's DataModule, set up, and its model (the net's input size and classes follow the data's)."""
    datamodule = CatDogDataModule(**dict(config.get("data") or {}))
    datamodule.sampling_seed = seed
    if datamodule.hparams.val_fraction == 0:
        raise ConfigError("--data.val_fraction 0 leaves no validation images to pick the best checkpoint; try 0.1.")
    follows = {target for _, target, _ in LINKS}  # a resumed run's saved values are the data's again
    model_cfg = {k: v for k, v in (config.get("model") or {}).items() if k not in follows}
    refuse_renamed(model_cfg)
    L.seed_everything(seed, workers=True, verbose=False)
    # The classes come from a listing of the folders, so the model (its settings checked) is built before the
    # photos are decoded; the decode (or the cache's load) then comes before any Lightning output and before a
    # run directory is made, so that data errors surface first.
    model = CatDogClassifier(**model_cfg, **linked(datamodule))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, model


@known_warnings_quiet()
def train(config: dict, callbacks: list[L.Callback] | None = None) -> dict:
    """Fit, then test the best (or, with ``test_checkpoint="last"``, the last) checkpoint.

    Returns (and writes to metrics.json) the results.

    ``config`` holds ``data``, ``model`` and ``trainer`` sections (keyword arguments of
    ``CatDogDataModule``, ``CatDogClassifier`` and ``lightning.Trainer``), plus ``seed_everything``,
    ``ckpt_path`` (a file or ``"last"``), ``run_name``, ``logs_dir``, ``checkpoint_every_n_steps``,
    ``early_stopping_patience``, ``test_checkpoint`` and ``log_images``.
    Anything left out takes its default; when resuming, it takes the resumed run's saved value
    instead. ``callbacks`` are added to the Trainer's own.

    Raises :class:`Interrupted` after a SIGINT/SIGTERM stopped training with last.ckpt saved.
    """
    logs_dir = Path(config.get("logs_dir") or DEFAULT_LOGS_DIR)
    allowed = tuple(config.get("allow_modules") or ())  # from the command line only (see CatDogCLI.parse_arguments)
    ckpt, run, config = resolve_run(config, logs_dir, allowed)
    settings = resolved_settings(config)
    seed = settings["seed_everything"]
    if (line := with_precision_resolved(settings["trainer"])[1]) and is_main_process():
        print(line, flush=True)  # before decoding and features: a slow choice is seen before it costs
    datamodule, model = data_and_model(config, seed)
    features = join_data_and_model(datamodule, model, ckpt)
    lock, created, caller_run_name = None, False, os.environ.get(RUN_NAME_ENV)
    if is_main_process():  # other DDP processes join the directory the first one claimed
        try:
            run, lock, created = claim(run, new=ckpt is None, auto_name=not config.get("run_name"))
        except OSError as exc:
            raise ConfigError(f"--logs_dir {logs_dir}: cannot make the run folder ({exc.strerror or exc}).") from None
    try:
        return _fit_and_test(settings, run, datamodule, model, ckpt, features, callbacks, allowed)
    except BaseException as exc:
        if created and not run.last_ckpt.exists():  # a start that failed leaves no new folder behind
            shutil.rmtree(run.path, ignore_errors=True)
        if isinstance(exc, OSError) and _is_write_failure(exc):  # config.yaml or the TensorBoard file
            raise ConfigError(f"cannot write in {run.path} ({exc.strerror or exc}); pick another --logs_dir.") from None
        raise
    finally:
        if lock is not None:
            lock.release()
        if is_main_process() and caller_run_name is None:  # it told DDP's processes the run; the caller's
            os.environ.pop(RUN_NAME_ENV, None)  # environment is left as it was
        elif is_main_process():
            os.environ[RUN_NAME_ENV] = caller_run_name


def _fit_and_test(
    settings: dict,
    run: RunDirectory,
    datamodule: CatDogDataModule,
    model: CatDogClassifier,
    ckpt: Path | None,
    features: tuple[float, str],
    callbacks: list[L.Callback] | None,
    allowed: tuple[str, ...],
) -> dict:
    """In the claimed run directory: record the settings, fit, test, write metrics.json."""
    feature_seconds, feature_note = features
    seed, test_checkpoint = settings["seed_everything"], settings["test_checkpoint"]
    safe_stops = SafeStops(run.last_ckpt, settings["checkpoint_every_n_steps"])
    unfreeze_at = getattr(model.net, "unfreeze_at_epoch", None)  # a fine-tune: its learning rates change
    try:
        trainer, best = build_trainer(
            run,
            dict(settings["trainer"]),
            [EpochSeeder(seed), safe_stops, FiniteLoss(), FitClock(feature_seconds), *(callbacks or [])],
            settings["log_images"] and not settings["trainer"].get("fast_dev_run"),  # it logs nothing
            settings["early_stopping_patience"],
            lr_monitor=model.hparams.scheduler != "none" or unfreeze_at is not None,
            allowed=allowed,
            best_by=settings["best_by"],
            early_stop_from=unfreeze_at or 0,
        )
    except (ValueError, TypeError) as exc:  # Lightning refusing a --trainer.* value it does not type-check
        raise ConfigError(f"{' '.join(str(exc).split())[:300]} (check the --trainer.* flags)") from None
    done = int(read_checkpoint(ckpt)["epoch"]) + 1 if ckpt is not None else 0  # epochs a resumed run has trained
    resolved = {
        "data": dict(datamodule.hparams),
        "model": {k: v for k, v in model.hparams.items() if k not in {target for _, target, _ in LINKS}},
        **settings,
        "run_name": run.name,
    }
    if is_main_process():
        print(datamodule.summary)
        if feature_note:
            print(f"{feature_note} in {feature_seconds:.1f} s")
        os.environ[RUN_NAME_ENV] = run.name
        remove_stale_temporaries(run.checkpoints)  # from a run killed while writing a checkpoint
        if not trainer.fast_dev_run:  # a debugging run records nothing
            atomic_write_text(run.config_file, yaml.safe_dump(resolved, sort_keys=False))
            write_hparams_summary(trainer.logger, resolved, trainer)
        if ckpt is not None:
            print(f"Resuming {run.path} from {ckpt}")
            if done >= trainer.max_epochs >= 0:
                print(
                    f"{run.name} has trained {done} epoch(s) already (--trainer.max_epochs {trainer.max_epochs}): "
                    "nothing to train, so it is only tested again. Give a larger --trainer.max_epochs to train further."
                )
    try:
        with signals_raise():  # SafeStops takes over while training runs; before it (the sanity check) these stop
            if not done > trainer.max_epochs >= 0:  # Lightning refuses a checkpoint beyond max_epochs: only tested
                trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    except (SIGTERMException, StopRequested) as stop:  # before training began: nothing new to save
        signum = getattr(stop, "signum", signal.SIGTERM)
        raise Interrupted(
            f"stopped by {signal.Signals(signum).name} before training began; {run.path} is unchanged.", 128 + signum
        ) from None
    except Diverged as stop:
        lr = model.hparams.lr
        lower = f", e.g. {lr / 10:g}" if math.isfinite(lr) else ""
        kept = f"the last good checkpoint is {run.last_ckpt}" if run.last_ckpt.is_file() else "no checkpoint was saved"
        raise ConfigError(
            f"{stop}: the run diverged. Try a lower learning rate (--model.lr {lr:g} now{lower}); {kept}."
        ) from None
    except (OSError, RuntimeError) as exc:
        if _is_lost_peer(exc):
            kept = f"saved {run.last_ckpt}" if run.last_ckpt.is_file() else "no checkpoint was saved yet"
            raise ConfigError(
                f"a DDP process was lost ({' '.join(str(exc).split())[:120]}...): another node or process died or "
                f"was cut off; {kept}. Start every node again with --ckpt_path last --run_name {run.name}."
            ) from None
        if not _is_write_failure(exc):
            raise
        raise ConfigError(
            f"could not write in {run.path} ({' '.join(str(exc).split())[:160]}): free some space there or "
            f"pick another --logs_dir; what was saved resumes with --ckpt_path last --run_name {run.name}."
        ) from None
    except TrainingInterrupted as stop:
        raise Interrupted(
            f"{stop}; saved {run.last_ckpt}. Resume with: "
            f"python scripts/train.py --ckpt_path last --run_name {run.name}",
            exit_code=128 + stop.signum,
        ) from None
    if trainer.fast_dev_run:
        return _dev_run_test(trainer, model, datamodule, run)

    best_path = Path(best.best_model_path) if best.best_model_path else run.best_ckpt
    test_path = run.last_ckpt if test_checkpoint == "last" else best_path
    if not test_path.is_file():
        raise ConfigError(
            f"{run.path}: training saved no {test_path.name} to test (no epoch finished, or no validation ran: "
            "check --trainer.max_steps, --trainer.max_time and --trainer.limit_*_batches)."
        )
    try:
        with signals_raise():
            tested = trainer.test(model, datamodule=datamodule, ckpt_path=str(test_path), weights_only=True,
                                  verbose=False)[0]  # fmt: skip
    except StopRequested as stop:
        raise Interrupted(
            f"stopped by {signal.Signals(stop.signum).name} while testing; training is done and saved in "
            f"{run.checkpoints}. Test it with: python scripts/train.py test --ckpt_path {test_path.stem} "
            f"--run_name {run.name}",
            128 + stop.signum,
        ) from None
    # Read back from the files: under ddp_spawn this process's trainer did not run the loops itself.
    best_saved, last_saved = read_checkpoint(best_path), read_checkpoint(run.last_ckpt)
    metrics = {
        "best_epoch": int(best_saved["epoch"]),  # counted from 0, as Lightning's log counts them
        "tested_epoch": int((last_saved if test_path == run.last_ckpt else best_saved)["epoch"]),
        "epochs_trained": int(last_saved["epoch"]) + 1,
        "tested_checkpoint": str(test_path),
        "global_step": int(last_saved["global_step"]),
        # training (and a probe's one-off features) in every process the run had: resumes go on counting
        "fit_seconds": float(last_saved["callbacks"].get("FitClock", {}).get("seconds", 0.0)),
        "feature_seconds": feature_seconds,
        "best_by": settings["best_by"],
        settings["best_by"]: float(best_saved["callbacks"][best.state_key]["best_model_score"]),
        **{k: float(v) for k, v in tested.items()},
        "best_checkpoint": str(best_path),
        "run_dir": str(run.path),
        "test_is_carved": datamodule.test_is_carved,
    }
    if is_main_process():
        atomic_write_text(run.metrics_file, json.dumps(metrics, indent=2))
        print(_results_table(metrics))
    return metrics


def _is_lost_peer(exc: BaseException) -> bool:
    """A collective that failed because a process of the group is gone (gloo's and NCCL's words for it)."""
    if isinstance(exc, OSError):  # this process's own files and pipes
        return False
    text = str(exc).lower()
    words = ("connection reset by peer", "connection closed by peer", "broken pipe", "remote process exited")
    return type(exc).__name__ == "DistBackendError" or any(word in text for word in words)


def _is_write_failure(exc: BaseException) -> bool:
    """A full or read-only disk, as Python (OSError) or torch's serializer (RuntimeError) reports it."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM)
    text = str(exc).lower()
    words = ("no space", "read-only", "failed writing", "file write failed", "unexpected pos")
    return any(word in text for word in words)


def _dev_run_test(trainer: L.Trainer, model: CatDogClassifier, datamodule: CatDogDataModule, run) -> dict:
    """``--trainer.fast_dev_run``: one test batch on the weights as they are; no checkpoint, no metrics.json."""
    tested = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    if is_main_process():
        if not run.last_ckpt.exists():  # a new run: its folder held nothing but what this start made
            shutil.rmtree(run.path, ignore_errors=True)
        print(
            "\nfast_dev_run: a few batches of training, validation and test ran without errors; nothing was saved "
            "(no checkpoints, no metrics.json, no run directory): their numbers mean nothing."
        )
    return {k: float(v) for k, v in tested.items()}
