"""Write a file so that readers see the old version or the new one, never a torn mix."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".catdog-tmp"  # distinctive: clean-up must never touch another program's temporaries
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A process killed at any moment leaves ``path`` as it was (or absent) plus at most one stray
    ``.<name>.*.catdog-tmp`` file, which :func:`remove_stale_temporaries` cleans up later.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's PID in the name: clean-up knows a temporary whose writer is gone from one being written.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would make it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some file systems cannot fsync a directory; the rename is still atomic
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text file (config.yaml, metrics.json, reports)."""
    atomic_write(path, lambda fh: fh.write(text.encode()))


def _writer_alive(path: Path) -> bool | None:
    """Whether the process named in a temporary's name (``.<file>.<pid>.<random>.catdog-tmp``) still runs;
    None for a name without one."""
    parts = path.name.split(".")
    pid = next((int(p) for p in reversed(parts[:-2]) if p.isdigit()), None)
    if pid is None:
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def remove_stale_temporaries(
    folder: str | os.PathLike, older_than_s: float = 0.0, names: tuple[str, ...] = ("",)
) -> list[Path]:
    """Delete this project's temporaries left in ``folder`` by writers killed mid-write: those of files whose
    names start with one of ``names`` whose writer has ended, or older than ``older_than_s`` (a PID can be
    reused, and older versions wrote none). Nothing else in the folder is touched."""
    now = time.time()
    stale = []
    found = [p for name in names for p in Path(folder).glob(f".{name}*{TMP_SUFFIX}")] if Path(folder).is_dir() else []
    for path in found:
        try:
            if _writer_alive(path) is False or now - path.stat().st_mtime >= older_than_s:
                path.unlink()
                stale.append(path)
        except OSError:  # gone already: another process cleaned it up
            pass
    return stale
