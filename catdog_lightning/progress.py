"""Progress of a long step (decoding, backbone features) for a person at a terminal and for a log file.

On a terminal: tqdm's bar, redrawn in place. Into a pipe or a file (a cluster's log, ``| tee``, CI) tqdm would
write nothing, or a line of carriage returns hundreds of kilobytes long; there a step prints a short line of
its own instead, each time another tenth is done (at most every few seconds) and at least every half minute,
with the count, the rate and the time left, so a reader of the log knows the run is alive and when it ends.
"""

from __future__ import annotations

import sys
import threading
import time

from tqdm import tqdm

EVERY_S = 30.0  # a log line at least this often while a step runs
TENTH_GAP_S = 5.0  # a tenth done sooner than this after the last line waits for the next one


def duration(seconds: float) -> str:
    """``42 s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LogLines:
    """``update(n)`` like tqdm's, printing a line now and then (see the module's docstring)."""

    def __init__(self, total: int, desc: str, unit: str = "images", stream=None, clock=time.monotonic, tenths=True,
                 heartbeat: bool = False):  # fmt: skip
        self.total, self.desc, self.unit, self.tenths = total, desc, unit, tenths
        self.stream, self.clock = stream, clock
        self.done, self.start = 0, clock()
        self.last_line, self.next_tenth = self.start, 1
        self.lock, self.closed, self.beating = threading.Lock(), threading.Event(), False
        if heartbeat:
            self.start_heartbeat()

    def start_heartbeat(self) -> None:
        """A line every half minute even while one step takes longer than that (a thread; start it after any
        fork, e.g. of DataLoader or decode workers: a child forked while it prints would inherit a held lock)."""
        if not self.beating:
            self.beating = True
            threading.Thread(target=self._beat, daemon=True, name=f"progress: {self.desc}").start()

    def _beat(self) -> None:
        while not self.closed.wait(max(0.5, EVERY_S - (self.clock() - self.last_line))):
            with self.lock:
                if self.clock() - self.last_line >= EVERY_S and not self.closed.is_set():
                    self._write(self.clock())

    def update(self, n: int = 1) -> None:
        with self.lock:
            self._update(n)

    def _update(self, n: int) -> None:
        self.done += n
        now = self.clock()
        tenth = self.tenths and self.total and self.done * 10 >= self.next_tenth * self.total
        if self.done < self.total and (
            now - self.last_line >= EVERY_S or (tenth and now - self.last_line >= TENTH_GAP_S)
        ):
            self._write(now)
        if self.total:
            self.next_tenth = max(self.next_tenth, self.done * 10 // self.total + 1)

    def _write(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = f", {duration((self.total - self.done) / rate)} left" if rate > 0 and self.total else ""
        line = f"{self.desc}: {self.done}/{self.total} {self.unit}{share}, {rate:.1f}/s{left}"
        print(line, file=self.stream or sys.stdout, flush=True)
        self.last_line = now

    def close(self, final: bool = True) -> None:
        """With ``final``, one closing line when the step ran long enough to have printed any (or longer)."""
        self.closed.set()
        now = self.clock()
        if final and now - self.start >= TENTH_GAP_S:
            unit = f" {self.unit}" if self.total else ""
            print(f"{self.desc}: {self.done}{unit} in {duration(now - self.start)}", file=self.stream or sys.stdout)

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc) -> None:
        self.close(final=exc[0] is None)


def progress(total: int, desc: str, unit: str = "images", disable: bool = False, heartbeat: bool = True):
    """tqdm's bar on a terminal, :class:`LogLines` elsewhere; nothing at all with ``disable`` (a small step).
    ``heartbeat`` False: no half-minute thread (a caller that forks workers while it runs)."""
    if disable:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit)
    return LogLines(total, desc, unit, heartbeat=heartbeat)
