"""Where runs live: ``<logs_dir>/<run_name>/``, the latest run, and the next free name.

The one authority on run directories, for the Lightning trainer, the NumPy network, the lesson's program
and the tools that use a trained model, and on who may write into one (the run lock). Knows the file
system only.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

DEFAULT_LOGS_DIR = "lightning_logs"


def next_run_name(logs_dir: str | Path, prefix: str = "version") -> str:
    """``<prefix>_N`` with N one past the highest already under ``logs_dir``."""
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+)")
    taken = [int(m.group(1)) for p in Path(logs_dir).glob(f"{prefix}_*") if (m := pattern.fullmatch(p.name))]
    return f"{prefix}_{max(taken, default=-1) + 1}"


@dataclass(frozen=True)
class RunDirectory:
    """``<logs_dir>/<name>/``: TensorBoard events, hparams.yaml, config.yaml, checkpoints/, metrics.json."""

    logs_dir: Path
    name: str

    @property
    def path(self) -> Path:
        return self.logs_dir / self.name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_ckpt(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    def holder(self) -> str | None:
        """The PID of the process training this run now (it holds the run's lock), or None."""
        try:
            fd = os.open(self.path / ".lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted: nobody holds it (released on close)
            return None
        except BlockingIOError:
            return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)

    @classmethod
    def next_version(cls, logs_dir: Path) -> RunDirectory:
        return cls(logs_dir, next_run_name(logs_dir))

    @classmethod
    def containing(cls, ckpt: Path) -> RunDirectory:
        """The run of a checkpoint at ``<logs_dir>/<run>/checkpoints/<name>.ckpt``."""
        run = ckpt.parent.parent
        return cls(run.parent, run.name)

    @classmethod
    def owning(cls, ckpt: Path) -> RunDirectory | None:
        """The run a checkpoint belongs to, when it sits in ``<run>/checkpoints/`` beside the run's config.yaml."""
        run = cls.containing(ckpt.absolute())
        return run if ckpt.absolute().parent.name == "checkpoints" and run.config_file.is_file() else None


def latest_run(logs_dir: Path, skip_live: bool = False) -> RunDirectory | None:
    """The run whose ``last.ckpt`` was written most recently; with ``skip_live``, of the runs no process is
    training now (each one skipped is named on stderr)."""
    lasts = sorted(
        (p for p in logs_dir.glob("*/checkpoints/last.ckpt") if p.is_file()), key=lambda p: p.stat().st_mtime_ns
    )
    for last in reversed(lasts):
        run = RunDirectory(logs_dir, last.parent.parent.name)
        holder = run.holder() if skip_live else None
        if holder is None:
            return run
        print(f"skipping {run.path}: process {holder} is training it", file=sys.stderr)
    return None


def resolve_checkpoint(
    spec: str | os.PathLike | None, logs_dir: str | Path = DEFAULT_LOGS_DIR, run_name: str | None = None
) -> Path:
    """The checkpoint a command names with ``--ckpt_path``: every command reads it through here.

    A file path is returned as given (reading it checks it); ``last`` or ``best`` is that checkpoint of
    ``--run_name``'s run, or of the most recent run under ``logs_dir`` that no process is training (a live
    run is named and skipped, never read or written); None (the flag left out) means ``best``. A
    :class:`ConfigError` says what is missing and how to get it.
    """
    if spec is not None and str(spec) not in ("last", "best"):
        return Path(spec)
    which = str(spec or "best")
    logs_dir = Path(logs_dir)
    run = RunDirectory(logs_dir, run_name) if run_name else latest_run(logs_dir, skip_live=True)
    path = None if run is None else (run.last_ckpt if which == "last" else run.best_ckpt)
    if path is not None and path.is_file():
        return path
    if spec is None:
        raise ConfigError(
            f"no trained run under {logs_dir}/ to take best.ckpt from; train one first (make train) "
            "or pass --ckpt_path."
        )
    where = run.path if run is not None else f"{logs_dir}/*"
    raise ConfigError(
        f"--ckpt_path {which}: no checkpoints/{which}.ckpt under {where}; train a run first with: "
        "python scripts/train.py (or give a checkpoint file)."
    )


def check_run_name(name: str) -> str:
    """``--run_name`` is one plain folder name under ``--logs_dir``: never a path that leads elsewhere."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._+=-]*", name or "") or name in (".", ".."):
        raise ConfigError(
            f"--run_name {name!r}: give one plain folder name of letters, digits and . _ - + = (not starting with "
            "'-' or '.'); runs always go under --logs_dir, which says where."
        )
    return name


class RunLock:
    """An OS lock on ``<run>/.lock`` while a process trains the run, with its PID in the file.

    The operating system releases it when the process ends, however it ends (``kill -9`` included), so a
    stale lock is simply taken over by the next run; a live one makes a second process stop before it
    touches anything.
    """

    def __init__(self, run: RunDirectory):
        self.path = run.path / ".lock"
        self._fh = None

    def acquire(self) -> None:
        # Never through a symlink, and only a regular file: a planted link or FIFO named .lock is refused.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot be opened as a lock file ({exc.strerror}); remove it.") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:  # a hard link would have us overwrite its twin
            os.close(fd)
            raise ConfigError(f"{self.path}: not a plain file of its own; a run's lock is one: remove it.")
        fh = os.fdopen(fd, "r+")
        try:
            for attempt in range(20):  # a reader (RunDirectory.holder) holds a shared lock for a moment
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == 19:
                        raise
                    time.sleep(0.01)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise ConfigError(
                f"{self.path.parent} is in use by process {holder} (training or resuming it); wait for it to end, "
                "or start another run with another --run_name."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file releases the lock
            self._fh = None


def claim(run: RunDirectory, new: bool, auto_name: bool) -> tuple[RunDirectory, RunLock, bool]:
    """Make (or join) the run directory and lock it: ``(run, lock, created)``.

    A new automatically named run takes its folder by exclusive creation, so two runs started together
    get two folders (the second moves on to the next ``version_N``). A named or resumed run is locked, and a
    second process on it is refused naming the holder's PID.
    """
    while True:
        try:
            run.path.mkdir(parents=True, exist_ok=not (new and auto_name))
            created = not any(run.path.iterdir())
            break
        except FileExistsError:  # another run took this version_N a moment ago
            run = RunDirectory.next_version(run.logs_dir)
    linked = sorted(entry.name for entry in run.path.iterdir() if entry.is_symlink())
    if linked:  # a run writes into its own folders only: a link would carry checkpoints or logs elsewhere
        raise ConfigError(
            f"{run.path / linked[0]}: a symbolic link inside a run folder; a run writes only into folders of its "
            "own: remove the link (move what it points to into the run, if it is the run's)."
        )
    lock = RunLock(run)
    lock.acquire()
    if new and run.last_ckpt.exists():
        lock.release()
        raise ConfigError(
            f"--run_name {run.name}: {run.path} already holds a run; resume it with "
            f"--ckpt_path last --run_name {run.name}, or pick another name."
        )
    return run, lock, created
