"""Progress for people and for log files: Lightning's tqdm progress bar, configured for where stdout goes.

On a terminal it is Lightning's bar as usual. Into a file or a cluster's log (stdout not a TTY) the same
``TQDMProgressBar`` keeps one bar per epoch (``leave=True``), skips the validation and sanity-check bars,
and writes each epoch's bar once, finished, on a line of its own, with the epoch's metrics: tqdm's
in-place redraws (carriage returns) are what make a piped log hundreds of kilobytes of unreadable text.
An epoch longer than half a minute also gets a short line every half minute (batches, rate, time left).
"""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from ..progress import LogLines


class FinalLines:
    """A file for tqdm that passes on only each bar's last state, one line per bar (no carriage returns)."""

    def __init__(self, stream):
        self.stream, self.line = stream, ""

    def write(self, text: str) -> None:
        for part in text.split("\n")[:-1] if "\n" in text else []:
            self.line += part.rsplit("\r", 1)[-1] if "\r" in part else part
            if self.line.strip():
                self.stream.write(self.line.rstrip() + "\n")
            self.line = ""
        tail = text.rsplit("\n", 1)[-1] if "\n" in text else text
        self.line = tail.rsplit("\r", 1)[-1] if "\r" in tail else self.line + tail

    def flush(self) -> None:
        self.stream.flush()


class LogFileProgressBar(TQDMProgressBar):
    """``TQDMProgressBar(leave=True)``: one finished line per training epoch, nothing for validation."""

    def __init__(self):
        super().__init__(refresh_rate=1_000_000, leave=True)  # drawn at each epoch's last batch only
        self.lines: LogLines | None = None  # the epoch's half-minute lines

    def init_train_tqdm(self) -> Tqdm:
        if self.is_disabled:  # every DDP process but rank 0: one line per epoch, not one per process
            return Tqdm(disable=True)
        return Tqdm(
            desc=self.train_description,
            leave=True,
            file=FinalLines(sys.stdout),
            ascii=True,
            bar_format=self.BAR_FORMAT,
            smoothing=0,
        )

    def on_train_start(self, *_) -> None:
        self.train_progress_bar = Tqdm(disable=True)  # each epoch makes its own bar (leave=True)

    # An epoch's line is written when the next one starts (or training ends): the LightningModule logs the
    # epoch's train/loss and train/acc in its own on_train_epoch_end, which runs after the callbacks'.
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass

    def _finish_line(self, trainer, pl_module) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.close()

    def on_train_epoch_start(self, trainer, *args) -> None:
        self._finish_line(trainer, trainer.lightning_module)
        super().on_train_epoch_start(trainer, *args)
        if not self.is_disabled:
            total = self.total_train_batches if isinstance(self.total_train_batches, int) else 0
            if self.lines is not None:
                self.lines.close(final=False)
            self.lines = LogLines(total, f"Epoch {trainer.current_epoch}", "batches", tenths=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.lines is not None:
            self.lines.update(1)
            self.lines.start_heartbeat()  # after the first batch: the DataLoader's workers are forked by then

    def on_train_end(self, trainer, pl_module) -> None:
        self._finish_line(trainer, pl_module)
        if self.lines is not None:
            self.lines.close(final=False)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.lines is not None:  # a stopped or failed run: no half-minute lines after it
            self.lines.close(final=False)

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the run's name is in the log already
        return metrics

    def init_sanity_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def init_test_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)


def progress_bar() -> TQDMProgressBar:
    """Lightning's bar on a terminal; :class:`LogFileProgressBar` when stdout goes to a file or a pipe."""
    return TQDMProgressBar() if sys.stdout.isatty() else LogFileProgressBar()
