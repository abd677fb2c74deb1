"""Decode image files into fixed-size RGB ``uint8`` arrays, once, on every core.

Every photo goes through :func:`decode_image`, for training and prediction alike, so a model
always sees pixels prepared the same way: EXIF orientation applied, any mode converted to RGB
(transparency over white, 16-bit scaled to 8-bit), then resized to ``size x size``.
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import os
import signal
import stat
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from ..progress import progress

# Pool chunks: big enough to amortise the inter-process hop, small enough for a smooth progress bar.
_CHUNK = 64
PROGRESS_BAR_FROM = 300  # images; below this a bar is noise
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
# What a photo may be, whatever its name says (JPEG's opener also returns the MPO variant many cameras write).
FORMATS = ("JPEG", "PNG", "BMP", "WEBP")


@dataclass(frozen=True)
class DecodeFailure:
    path: str
    reason: str


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _SIXTEEN_BIT_MODES:
        # PIL's own convert("L") clips 16-bit values at 255 (a white picture); scale instead.
        wide = np.asarray(img, dtype=np.float32) / 257.0
        img = Image.fromarray(np.clip(wide, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


class TooManyPixels(ValueError):
    """A photo whose header gives more pixels than the caller allows (read before any pixel is decoded)."""


def decode_image(
    source: str | os.PathLike | bytes, size: int, draft: bool = True, max_pixels: int | None = None
) -> np.ndarray:
    """Read one image (a file, or its bytes) as a ``size x size x 3`` uint8 RGB array.

    ``draft`` lets libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale (never below ``size``) before the
    final resize: several times faster on photos, with no loss at the small sizes we train at.
    Only the formats we read are tried (:data:`FORMATS`): never one whose decoder starts another program
    (Pillow hands EPS to Ghostscript). Raises on anything unreadable, including images over PIL's
    decompression-bomb limit, which is checked from the header before any pixel is decoded; ``max_pixels``
    sets a lower limit of the caller's (:class:`TooManyPixels`), checked the same way.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif not stat.S_ISREG(os.stat(source).st_mode):  # a FIFO (or socket, device) would block the read forever
        raise ValueError("not a regular file (a FIFO, socket or device)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(source, formats=FORMATS) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise TooManyPixels(f"{img.width}x{img.height} pixels, over the {max_pixels:,} a photo may have")
            if draft:
                img.draft("RGB", (size, size))
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)


def _decode_chunk(paths: Sequence[str], size: int, draft: bool) -> list[np.ndarray | DecodeFailure]:
    out: list[np.ndarray | DecodeFailure] = []
    for path in paths:
        try:
            out.append(decode_image(path, size, draft))
        except Exception as exc:  # any unreadable file is reported, never fatal
            reason = " ".join(str(exc).split()) or type(exc).__name__
            out.append(DecodeFailure(path, f"{type(exc).__name__}: {reason}"[:200]))
    return out


def _tied_to(parent: int) -> None:
    """A decode worker ends with the process that started it, however that ends (kill -9 included), and never
    holds its stdout or stderr open: whatever ran the command (a pipe, a CI job) sees it finish."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: no such call
        pass
    if os.getppid() != parent:  # the parent died before the call above took effect
        os._exit(1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_many(
    paths: Sequence[str], size: int, draft: bool = True, workers: int | None = None, desc: str = "decoding"
) -> tuple[np.ndarray, list[int], list[DecodeFailure]]:
    """Decode ``paths`` in parallel.

    Returns ``(images, kept, failures)``: images is ``K x 3 x size x size`` uint8 in the order of
    ``paths`` with failures left out, ``kept`` the indices into ``paths`` of those K images.
    """
    workers = available_cores() if workers is None else workers
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    # No heartbeat thread: the decode pool forks while this runs (and a chunk of photos is well under 30 s).
    bar = progress(len(paths), desc, disable=len(paths) < PROGRESS_BAR_FROM, heartbeat=False)
    # Each chunk's pictures go straight into their rows: the decoded set is held once, not twice.
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    failures: list[DecodeFailure] = []

    def place(start: int, chunk_results: list[np.ndarray | DecodeFailure]) -> None:
        for i, result in enumerate(chunk_results, start):
            if isinstance(result, DecodeFailure):
                failures.append(result)
            else:
                images[i], ok[i] = result.transpose(2, 0, 1), True
        bar.update(len(chunk_results))

    if workers <= 1 or len(chunks) <= 1:
        for n, chunk in enumerate(chunks):
            place(n * _CHUNK, _decode_chunk(chunk, size, draft))
    else:
        # fork: workers start in milliseconds and need nothing pickled but file names.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(chunks)), mp_context=ctx, initializer=_tied_to, initargs=(os.getpid(),)
        )
        with pool:
            futures = [pool.submit(_decode_chunk, chunk, size, draft) for chunk in chunks]
            for n, future in enumerate(futures):
                place(n * _CHUNK, future.result())
    bar.close()
    kept = np.flatnonzero(ok).tolist()
    if len(kept) < len(paths):
        images = images[ok]
    return images, kept, failures
