"""The Trainer a run uses: its loggers (TensorBoard first, then --trainer.logger), checkpoints, callbacks
(ours, then --trainer.callbacks), the HPARAMS summary, and the warnings nobody can act on."""

from __future__ import annotations

import importlib
import inspect
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch.utils.tensorboard.summary import hparams as hparams_summary

from ..errors import ConfigError
from ..hardware import resolve_trainer_precision
from ..storage.atomic import TMP_SUFFIX
from ..storage.checkpoints import AtomicCheckpointIO
from ..storage.runs import RunDirectory
from .progress import progress_bar
from .settings import check_class_paths
from .tensorboard import TensorBoardPictures

BEST_MODE = {"val/acc": "max", "val/loss": "min"}  # what best.ckpt (and early stopping) follows
# The settings people compare runs by, first in HPARAMS.
HPARAMS_FIRST = (
    "model.net.class_path",
    "model.lr",
    "data.image_size",
    "data.data_dir",
    "trainer.precision",
    "seed_everything",
)
# The columns users sort runs by in TensorBoard's HPARAMS tab (the best validation accuracy, not the last).
HPARAM_METRICS = ("val/acc_best", "test/acc", "test/auroc", "val/acc", "val/loss")


class RunLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger, with ``hparams.yaml`` written atomically like every other run file
    (Lightning writes it in place; a kill mid-write would leave it torn)."""

    _written: dict | None = None

    def save(self) -> None:
        path = Path(self.log_dir) / self.NAME_HPARAMS_FILE
        # Written again when they changed: under DDP the first save comes before the hyperparameters are logged.
        if path.parent.is_dir() and (not path.is_file() or dict(self.hparams) != self._written):
            tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
            save_hparams_to_yaml(tmp, self.hparams)
            os.replace(tmp, path)
            self._written = dict(self.hparams)
        super().save()  # finds the file written, and flushes the events


class EarlyStoppingFrom(EarlyStopping):
    """Lightning's EarlyStopping, watching from ``start_epoch`` on: a fine-tune's head-only epochs settle before
    its backbone unfreezes, and must not stop the run before the backbone has trained."""

    def __init__(self, start_epoch: int, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_epoch = start_epoch

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        if trainer.current_epoch >= self.start_epoch:
            super()._run_early_stopping_check(trainer)


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, for run folders that get copied and moved: a resumed run takes its best
    score and best path from the checkpoint, moved into the folder it lives in now. (Lightning restores them
    only when the folder's path is unchanged, and a copy would then overwrite its real best.ckpt with the
    first epoch it trains, however much worse.)"""

    @property
    def state_key(self) -> str:  # ModelCheckpoint's, so checkpoints written before this class still resume
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict) -> None:
        here, there = str(self.dirpath), state_dict.get("dirpath")
        if there and there != here:
            move = lambda path: str(Path(here) / Path(path).name) if path else path  # noqa: E731
            state_dict = {
                **state_dict,
                "dirpath": here,
                **{k: move(state_dict.get(k)) for k in ("best_model_path", "kth_best_model_path", "last_model_path")},
                "best_k_models": {move(k): v for k, v in (state_dict.get("best_k_models") or {}).items()},
            }
        super().load_state_dict(state_dict)


def hparams_table(config: dict) -> dict[str, int | float | str | bool]:
    """Every resolved setting as one flat row of HPARAMS: data, model, trainer and the top-level ones, those
    people compare runs by first (TensorBoard shows the first columns when the tab opens)."""
    flat: dict[str, int | float | str | bool] = {}

    def add(name: str, value) -> None:  # nested settings (model.net.init_args.*) each a column of their own
        if isinstance(value, dict) and value:
            for sub, item in value.items():
                add(f"{name}.{sub}", item)
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)

    for key, value in config.items():
        add(key, value)
    leading = {name: flat.pop(name) for name in HPARAMS_FIRST if name in flat}
    return {**leading, **flat}


def write_hparams_summary(logger: TensorBoardLogger, config: dict, trainer: L.Trainer | None = None) -> None:
    """Tell TensorBoard's HPARAMS tab every setting and which scalars to show beside it (not hp_metric = -1)."""
    if trainer is not None:  # what the Trainer resolved, whether or not a flag gave it
        config = {**config, "trainer": {**config.get("trainer", {}), "precision": str(trainer.precision)}}
    writer = logger.experiment._get_file_writer()
    for summary in hparams_summary(hparams_table(config), {name: 0.0 for name in HPARAM_METRICS}):
        writer.add_summary(summary)


def inside_the_run(logger: type, init_args: dict, run: RunDirectory) -> dict:
    """Where an extra logger writes: inside the run, in a folder of its own (``--trainer.logger.save_dir csv``
    means ``<run>/csv/``; unsaid, ``<run>/<its name>/``), never beside the runs nor over TensorBoard's files."""
    accepted = inspect.signature(logger).parameters
    placed = dict(init_args)
    if "save_dir" in accepted:
        name = logger.__name__.lower().removesuffix("logger") or "logs"
        save_dir = Path(placed.get("save_dir") or name)
        inside = (run.path / save_dir).resolve()
        if save_dir.is_absolute() or not inside.is_relative_to(run.path.resolve()) or inside == run.path.resolve():
            raise ConfigError(
                f"--trainer.logger {logger.__name__} save_dir {save_dir}: an extra logger writes in a folder of its "
                f"own inside the run, e.g. save_dir: {name}; not elsewhere."
            )
        placed["save_dir"] = str(run.path / save_dir)
        for key in ("name", "version"):
            if key in accepted and placed.get(key) is None:
                placed[key] = ""
    return placed


def instantiate(specs, flag: str, kind: type, allowed: tuple[str, ...] = (), place=None) -> list:
    """Objects from LightningCLI-style ``{"class_path": ..., "init_args": {...}}`` specs (one, or a list).

    A bare class name is looked up among Lightning's callbacks and loggers; anything else needs its full
    import path (``mypackage.MyCallback``), in Lightning, this package or a module of ``allowed``
    (checked before it is imported), and must be a subclass of ``kind`` (checked before it is called).
    """
    if specs is None or specs is False or specs is True:  # True/False: Lightning's own switch, ours stays on
        return []
    out = []
    for spec in specs if isinstance(specs, list) else [specs]:
        if not isinstance(spec, dict) or "class_path" not in spec:
            raise ConfigError(f"{flag}: give class_path (and init_args), e.g. {{class_path: CSVLogger, ...}}.")
        path = str(spec["class_path"])
        check_class_paths(spec, flag, allowed)
        module_name, _, name = path.rpartition(".")
        modules = [module_name] if module_name else ["lightning.pytorch.callbacks", "lightning.pytorch.loggers"]
        found = None
        for module in modules:
            try:
                found = getattr(importlib.import_module(module), name, None)
            except ImportError:
                found = None
            if found is not None:
                break
        if found is None:
            raise ConfigError(f"{flag}: cannot import {path}; give the full import path, e.g. mypackage.MyCallback.")
        if not (isinstance(found, type) and issubclass(found, kind)):
            raise ConfigError(f"{flag}: {path} is not a Lightning {kind.__name__}; nothing was run.")
        if issubclass(found, ModelCheckpoint):
            raise ConfigError(
                f"{flag}: {path}: a run keeps its own checkpoints (checkpoints/best.ckpt and last.ckpt); choose what "
                "best means with --best_by, and save mid-epoch with --checkpoint_every_n_steps."
            )
        init_args = dict(spec.get("init_args") or {})
        init_args = place(found, init_args) if place else init_args
        try:
            out.append(found(**init_args))
        except (TypeError, ValueError, ImportError) as exc:  # bad init_args, or a package it needs is missing
            raise ConfigError(f"{flag} {path}: {' '.join(str(exc).split())[:200]}") from None
    return out


def build_trainer(
    run: RunDirectory,
    trainer_cfg: dict,
    callbacks: list[L.Callback],
    log_images: bool = True,
    early_stopping_patience: int = 0,
    lr_monitor: bool = False,
    allowed: tuple[str, ...] = (),
    best_by: str = "val/acc",
    early_stop_from: int = 0,
) -> tuple[L.Trainer, ModelCheckpoint]:
    # TensorBoard always, first (trainer.logger: the pictures and HPARAMS go there); --trainer.logger adds more.
    logger = RunLogger(save_dir=str(run.logs_dir), name="", version=run.name, default_hp_metric=False)
    extra_loggers = instantiate(
        trainer_cfg.pop("logger", None), "--trainer.logger", Logger, allowed, lambda cls, a: inside_the_run(cls, a, run)
    )
    extra_callbacks = instantiate(trainer_cfg.pop("callbacks", None), "--trainer.callbacks", L.Callback, allowed)
    # None (what --print_config writes for Lightning's default) means on, as leaving the flag out does.
    if trainer_cfg.get("enable_progress_bar") is None:
        trainer_cfg["enable_progress_bar"] = True
    if trainer_cfg["enable_progress_bar"] and not any(isinstance(c, ProgressBar) for c in extra_callbacks):
        extra_callbacks.append(progress_bar())
    best = RunCheckpoint(
        dirpath=run.checkpoints,
        filename="best",
        monitor=best_by,
        mode=BEST_MODE[best_by],
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # A second, unmonitored checkpoint rewritten after every epoch: save_last on the monitored one
    # only writes when a new best is saved, which leaves a stale last.ckpt.
    last = RunCheckpoint(
        dirpath=run.checkpoints, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    plugins = trainer_cfg.pop("plugins", None) or []
    trainer = L.Trainer(
        **with_precision_resolved(trainer_cfg)[0],
        logger=[logger, *extra_loggers] if extra_loggers else logger,
        callbacks=[
            best,
            last,
            *([TensorBoardPictures()] if log_images else []),
            *(
                [EarlyStoppingFrom(early_stop_from, best_by, mode=BEST_MODE[best_by], patience=early_stopping_patience)]
                if early_stopping_patience
                else []
            ),
            # The learning rate of every parameter group, when a schedule (or fine-tuning) changes it.
            *([LearningRateMonitor()] if lr_monitor else []),
            *callbacks,
            *extra_callbacks,
        ],
        plugins=[*(plugins if isinstance(plugins, list) else [plugins]), AtomicCheckpointIO()],
        # The DataModule shards each process's images itself, without DistributedSampler's padding.
        use_distributed_sampler=False,
        default_root_dir=str(run.logs_dir),
    )
    return trainer, best


def with_precision_resolved(trainer_cfg: dict) -> tuple[dict, str | None]:
    """``trainer_cfg`` with ``precision: auto`` made what this machine runs fast (see :mod:`..hardware`), and the
    line saying so (or warning of an explicit bf16 this CPU emulates); None when there is nothing to say."""
    if trainer_cfg.get("precision") is None:
        return dict(trainer_cfg), None
    precision, line = resolve_trainer_precision(trainer_cfg["precision"], trainer_cfg.get("accelerator"))
    return {**trainer_cfg, "precision": precision}, line


# Warnings nobody can act on, each with why.
KNOWN_WARNINGS = (
    # Batches come from an in-memory tensor: DataLoader workers would only add start-up time.
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    # Under DDP our epoch values come from torchmetrics, which already synchronised them across processes.
    ".*It is recommended to use `self.log\\(.*sync_dist=True.*",
    # Resuming writes into the run's own checkpoints/ folder on purpose.
    ".*Checkpoint directory .* exists and is not empty.*",
    # The test after fit meets the fine-tuning callback the model supplies (configure_callbacks) a second time.
    ".*configure_callbacks` will override existing callbacks.*",
    # LitData's streaming loader gives each worker its own share, so its length is right (Lightning cannot know).
    ".*Your `IterableDataset` has `__len__` defined.*",
    # Mid-epoch resumes are exact without a stateful DataLoader: EpochSeeder and the sampler continue the epoch.
    ".*ended before the epoch ended and your dataloader is not resumable.*",
    # A frozen pretrained backbone is kept in eval mode on purpose (CatDogClassifier.train).
    ".*module\\(s\\) in eval mode at the start of training.*",
    # The model summary only estimates its size in MB under bf16; the parameter counts are right.
    ".*is not supported by the model summary.*",
    # Raised inside Lightning 2.6 itself on torch >= 2.10; nothing a user can act on.
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
)


@contextmanager
def known_warnings_quiet():
    """Those warnings off while a command runs, and the caller's own filters back afterwards: a library call
    changes nothing process-wide."""
    with warnings.catch_warnings():
        for pattern in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", pattern)
        yield
