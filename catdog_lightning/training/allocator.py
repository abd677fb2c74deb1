"""Keep freed memory in the process for the next training step, instead of handing it back to the OS.

glibc serves allocations above a threshold (at most 32 MB) with fresh ``mmap`` pages and unmaps them on
free. A convolutional network on a CPU allocates activations of that size on every step, so each step
page-faults its memory in again: most of a 224-pixel probe's feature extraction was system time, and
raising the threshold made it markedly faster (docs/performance.md). The price is a process that keeps its
peak memory, and the setting is the whole process's: only a command's entry point sets it (cli.main), never a
library call such as ``train()``.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 1 << 30


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt  # noqa: B018 (glibc has it; musl, macOS, Windows do not)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB; False where the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, _KEEP_BYTES))
