"""Which checkpoint a command uses: the one named, or the latest run's best, said on stderr."""

from __future__ import annotations

import os
import sys

from ..storage.runs import DEFAULT_LOGS_DIR, resolve_checkpoint


def checkpoint_or_latest(ckpt_path: str | None, logs_dir: str | os.PathLike = DEFAULT_LOGS_DIR) -> str:
    """``--ckpt_path`` resolved (a file, ``last`` or ``best``); without one, the latest run's best.ckpt, saying so
    on stderr."""
    ckpt = str(resolve_checkpoint(ckpt_path, logs_dir))
    if not ckpt_path:
        print(f"Using {ckpt} (the most recent run's best checkpoint)", file=sys.stderr)
    return ckpt
