"""``scripts/sweep.py``: trials of train.py on an Optuna study.

Optuna gives the study and its storage (a SQLite file by default; PostgreSQL or MySQL, or its journal file,
to share one study between machines), the sampler (TPE), the median pruner, the heartbeat that marks a
killed worker's trial failed, and the callback that queues it again with the same values. The Lightning
pruning callback comes from ``optuna-integration``. What is written here: the search-space file, each trial
as an ordinary run (``train()`` with the trial's flags; a retried trial resumes the run its killed worker
left) scored at the checkpoint it tested, the check that a continued study searches the same space, and the
report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from argparse import ArgumentError
from pathlib import Path

from ..errors import ConfigError, Interrupted, QuietOnceStopped, UserError
from ..storage.runs import DEFAULT_LOGS_DIR, RunDirectory, check_run_name
from .search import OBJECTIVES, as_flags, read_search_space, suggest

# Flags a sweep sets for each trial itself.
OWN_FLAGS = ("--run_name", "--logs_dir", "--ckpt_path", "--best_by")
RETRIES = 2  # times a trial whose worker was killed is queued again


def storage_url(args: dict) -> str:
    return args.get("storage") or f"sqlite:///{Path(args['logs_dir']) / 'optuna.db'}"


def _retry_callback():
    import optuna

    storages = optuna.storages
    callback = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return callback(max_retry=RETRIES, inherit_intermediate_values=True)


OPTUNA_TABLES = {"studies", "trials", "version_info", "alembic_version"}


def check_sqlite_file(path: Path, url: str) -> None:
    """A SQLite file that holds tables, none of them Optuna's, is someone else's database: refused before
    Optuna adds its tables to it."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        raise ConfigError(f"--storage {url}: not a SQLite database ({exc}); give another file.") from None
    if tables and not tables & OPTUNA_TABLES:
        shown = ", ".join(sorted(tables)[:5])
        raise ConfigError(f"--storage {url}: a database of something else (tables {shown}); give another file.")


def open_storage(url: str, heartbeat_s: int):
    """Optuna's RDB storage with a heartbeat: a trial whose worker stops beating for 2 heartbeats is failed
    and queued again; or, for ``journal:///path``, its journal file (for a shared disk without a database:
    no heartbeat there, so a killed worker's trial stays RUNNING). One line when the URL cannot be opened."""
    import optuna

    if url.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        path = Path("/" + url.removeprefix("journal:///").lstrip("/"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise ConfigError(f"--storage {url}: cannot be opened ({exc.strerror or exc}).") from None
    if url.startswith("sqlite:///"):
        check_sqlite_file(Path(url.removeprefix("sqlite:///")), url)

    callback_arg = (
        "heartbeat_stale_trial_callback"
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
        else "failed_trial_callback"
    )
    sqlite = url.startswith("sqlite:///")
    # SQLite: wait for another worker's write instead of failing at once ("database is locked").
    engine = {"connect_args": {"timeout": 60}} if sqlite else None
    for attempt in range(5):  # workers started together race to create the tables: the loser tries again
        try:
            if sqlite:
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                **{callback_arg: _retry_callback()},
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 (SQLAlchemy's and the driver's many errors: one line)
            # Any database: two workers created the same table or row first. SQLite also reports it as locked.
            created = type(exc).__name__ == "IntegrityError" or "already exists" in str(exc)
            racing = created or (sqlite and type(exc).__name__ == "OperationalError")
            if racing and attempt < 4:
                time.sleep(0.5 + attempt)
                continue
            reason = " ".join(str(exc).split())[:200]
            raise ConfigError(f"--storage {url}: cannot be opened ({type(exc).__name__}: {reason}).") from None


def open_study(storage, name: str, objective: str, space: dict, pruning: dict):
    """The study ``name`` (created, or continued when it exists), refused when it searched another space."""
    import optuna

    signature = hashlib.sha256(json.dumps([objective, space], sort_keys=True).encode()).hexdigest()[:16]
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=pruning["startup_trials"], n_warmup_steps=pruning["warmup_epochs"]
    )
    study = optuna.create_study(
        storage=storage, study_name=name, direction=OBJECTIVES[objective], pruner=pruner, load_if_exists=True
    )
    had = study.user_attrs.get("search_space")
    if had is None:
        study.set_user_attr("search_space", signature)
        study.set_user_attr("space", json.dumps(space))
    elif had != signature:
        raise ConfigError(
            f"--study_name {name}: that study searched another space (or objective); nothing of it was changed. "
            "Continue it with its own search file, or start a new --study_name."
        )
    return study


def base_flags(argv: list[str]) -> list[str]:
    for flag in OWN_FLAGS:
        if any(token == flag or token.startswith(f"{flag}=") for token in argv):
            raise ConfigError(f"{flag}: sweep.py sets it for each trial; leave it out.")
    return argv


def make_objective(
    study_name: str, objective: str, space: dict, argv: list[str], logs_dir: str, parse, train, quiet=None
):
    """The function Optuna calls per trial: the trial's flags through train.py's parser into ``train()``;
    ``quiet`` (a :class:`QuietOnceStopped`) is told when a trial is stopped by a signal."""
    from optuna_integration import PyTorchLightningPruningCallback

    def run_trial(trial) -> float:
        values = suggest(trial, space)
        # A trial queued again (its worker was killed or stopped) carries its first run's folder: resume that.
        run_dir = trial.user_attrs.get("run_dir")
        run = RunDirectory(Path(logs_dir), Path(run_dir).name if run_dir else f"{study_name}-trial{trial.number}")
        name = run.name
        resume = ["--ckpt_path", "last"] if run.last_ckpt.is_file() else []
        trial.set_user_attr("run_dir", str(run.path))
        started = time.perf_counter()
        try:
            config = parse([*argv, *as_flags(values), "--run_name", name, "--logs_dir", logs_dir,
                            "--best_by", objective, *resume])  # fmt: skip
            metrics = train(config, callbacks=[PyTorchLightningPruningCallback(trial, monitor=objective)])
        except Interrupted as stop:  # Ctrl-C or SIGTERM: queued again, so continuing the study resumes this run
            trial.study.enqueue_trial(trial.params, user_attrs={"run_dir": str(run.path)}, skip_if_exists=False)
            if quiet is not None:  # Optuna would log the trial as failed, with a traceback
                quiet.stopped = True
            said = str(stop).split(";")[0]
            raise Interrupted(
                f"{said}; trial {trial.number} is queued again: the same sweep.py command continues the sweep, "
                f"resuming {run.name} where it stopped.",
                stop.exit_code,
            ) from None
        except (UserError, ArgumentError) as exc:  # values train.py refuses: this trial fails, and counts as done
            reason = " ".join(str(exc).split())[:300]
            trial.set_user_attr(REFUSED, reason)
            print(f"trial {trial.number} refused ({', '.join(f'{k}={v}' for k, v in values.items())}): {reason}")
            return float("nan")  # Optuna marks it failed in one line, without a traceback
        trial.set_user_attr("fit_seconds", time.perf_counter() - started)
        trial.set_user_attr("test_acc", metrics["test/acc"])
        return scored(metrics, objective, config)

    return run_trial


def scored(metrics: dict, objective: str, config: dict) -> float:
    """The objective of the checkpoint the run tested: a recipe that tests ``last.ckpt`` is judged by its last
    epoch, not by its best one (the best of many epochs on a small validation split flatters a trial)."""
    if Path(metrics["tested_checkpoint"]).name != "last.ckpt" or metrics["tested_epoch"] == metrics["best_epoch"]:
        return metrics[objective]
    from ..training.stages import evaluate_checkpoint

    trainer, data = config.get("trainer") or {}, config.get("data") or {}
    settings = {k: trainer[k] for k in ("accelerator", "precision") if trainer.get(k) is not None}
    evaluating = {**settings, "devices": 1, "enable_progress_bar": False}
    cache = {"cache_dir": data["cache_dir"]} if data.get("cache_dir") else {}  # the run's own decode cache
    return evaluate_checkpoint(metrics["tested_checkpoint"], cache, evaluating, stage="validate")[objective]


REFUSED = "refused"  # the user attribute of a trial whose values train.py refused, with the reason


def done_trials(study) -> list:
    """Finished trials (complete, pruned) and those refused as bad settings: what --n_trials counts. A trial
    failed because its worker died is not done: its retry is."""
    import optuna

    states = optuna.trial.TrialState

    def done(t) -> bool:
        return t.state in (states.COMPLETE, states.PRUNED) or (t.state == states.FAIL and REFUSED in t.user_attrs)

    return [t for t in study.get_trials(deepcopy=False) if done(t)]


def stop_at(n_trials: int):
    """Optuna's MaxTrialsCallback, counting :func:`done_trials` across every worker of the study."""

    def callback(study, trial) -> None:
        if len(done_trials(study)) >= n_trials:
            study.stop()

    return callback


def run_sweep(args: dict, argv: list[str], parse) -> dict:
    """The body of scripts/sweep.py: check everything, open the study, run trials until the study holds
    ``n_trials`` finished ones (all workers together), then report."""
    try:
        import optuna
        import optuna_integration  # noqa: F401
    except ImportError:
        raise ConfigError("sweeps need the sweep extra: pip install -e '.[sweep]' (make sweep does this)") from None
    from ..training import train
    from .report import report

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat, retry callback
    if args["n_trials"] < 1:
        raise ConfigError(f"--n_trials must be at least 1, got {args['n_trials']}.")
    if args["heartbeat_s"] < 1:
        raise ConfigError(f"--heartbeat_s must be at least 1, got {args['heartbeat_s']}.")
    allowed = tuple(parse(base_flags(argv)).get("allow_modules") or ())  # from the command line alone
    objective, space, pruning = read_search_space(args["search"], parse, allowed)
    name = check_run_name(args.get("study_name") or Path(args["search"]).stem)
    base = base_flags(argv)
    parse(base)  # the flags every trial shares, checked once before any trial
    logs_dir = args["logs_dir"] or DEFAULT_LOGS_DIR
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url(args), args["heartbeat_s"])
    study = open_study(storage, name, objective, space, pruning)
    if len(done_trials(study)) < args["n_trials"]:
        quiet = QuietOnceStopped()
        handlers = logging.getLogger("optuna").handlers
        for handler in handlers:
            handler.addFilter(quiet)
        try:
            study.optimize(
                make_objective(name, objective, space, base, logs_dir, parse, train, quiet),
                callbacks=[stop_at(args["n_trials"])],
                gc_after_trial=True,
            )
        finally:
            for handler in handlers:
                handler.removeFilter(quiet)
    return report(study, name, objective, space, base, logs_dir, parse)
