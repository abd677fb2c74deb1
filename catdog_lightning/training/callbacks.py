"""Callbacks that keep a run reproducible and its progress safe."""

from __future__ import annotations

import random
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import torch


class EpochSeeder(L.Callback):
    """Reseed torch, NumPy and ``random`` at every epoch start from ``(seed, epoch, rank)``.

    Dropout and augmentation then depend on the epoch number, not on how many epochs this process
    has run, so a run resumed at an epoch boundary draws exactly what the uninterrupted run drew.

    A run resumed from a mid-epoch checkpoint (``--checkpoint_every_n_steps``, Ctrl-C) continues that epoch
    exactly too: the checkpoint holds the random generators' states as they were when it was written, which
    are put back instead of the epoch's seed, and the epoch's sampler skips the batches already trained on.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._saved: dict | None = None

    def state_dict(self) -> dict:
        # Plain values and tensors only, so checkpoints still load with weights_only=True.
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "random": [version, list(internal), gauss_next],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning does not call on_train_epoch_start for the epoch a mid-epoch checkpoint resumes: continue
        # it here, from the restored position (batches done) and random state.
        loop = trainer.fit_loop.epoch_loop
        done = loop.batch_progress.current.ready  # restored: batches of this epoch trained before the checkpoint
        saved, self._saved = self._saved, None
        if not (loop.restarting and saved is not None and 0 < done < trainer.num_training_batches):
            return
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if hasattr(sampler, "skip_batches"):
            sampler.skip_batches(trainer.current_epoch, done)
        torch.set_rng_state(saved["torch"])
        kind, keys, pos, has_gauss, gauss = saved["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate((saved["random"][0], tuple(saved["random"][1]), saved["random"][2]))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = (self.seed * 1_000_003 + trainer.current_epoch * 1_009 + trainer.global_rank) % 2**32
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a step, with last.ckpt written."""

    def __init__(self, signum: int, global_step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {global_step}")
        self.signum, self.global_step = signum, global_step


class SafeStops(L.Callback):
    """Turn Ctrl-C and SIGTERM into: finish the current step, write ``last.ckpt``, stop.

    Also writes ``last.ckpt`` every ``every_n_steps`` steps (0 = only at epoch ends), for long
    epochs. The signal handlers live only while training runs.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, last_ckpt: str | Path, every_n_steps: int = 0):
        self.last_ckpt, self.every_n_steps = str(last_ckpt), every_n_steps
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _request_stop(self, signum: int, frame) -> None:
        self.requested = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed here, after Lightning registered its own SIGTERM handler (which would end the
        # process with exit code 0 without saving), so ours replaces it while training runs.
        self.requested = None
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._request_stop)
            except ValueError:  # not the main thread (e.g. a notebook's worker): no graceful stop there
                pass

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        if self.requested is not None:  # a signal during the last validation: saved already, but still a stop
            raise TrainingInterrupted(self.requested, trainer.global_step)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        stop = self.requested is not None
        if trainer.world_size > 1:  # every process must stop at the same step, or DDP deadlocks
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.save_checkpoint(self.last_ckpt)
            raise TrainingInterrupted(self.requested or signal.SIGTERM, trainer.global_step)
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.last_ckpt)


class StopRequested(Exception):
    """SIGINT or SIGTERM outside the training loop (the sanity check, the test)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def signals_raise():
    """SIGINT and SIGTERM raise :class:`StopRequested` here (Lightning would exit 1 quietly on Ctrl-C, and ignore
    SIGTERM, outside its training loop); SafeStops replaces this while training runs, to stop after a step."""

    def stop(signum, frame):
        raise StopRequested(signum)

    previous = {}
    for signum in SafeStops.SIGNALS:
        try:
            previous[signum] = signal.signal(signum, stop)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class FiniteLoss(L.Callback):
    """Stops a run whose loss stops being a number: everything after would be NaN, checkpoints included."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(torch.isfinite(loss.detach())):
            raise Diverged(
                f"the training loss became {float(loss)} at epoch {trainer.current_epoch}, step {trainer.global_step}"
            )


class FitClock(L.Callback):
    """Seconds a run has trained, summed over every process it had: kept in its checkpoints, so a resumed run
    goes on counting. ``extra``: this process's one-off work before fit (a probe's features)."""

    def __init__(self, extra: float = 0.0):
        self.before, self.extra, self._start = 0.0, extra, None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.before + self.extra + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before = float(state_dict.get("seconds", 0.0))
