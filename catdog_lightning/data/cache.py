"""Decode a scanned folder once and keep the result on disk.

A cache file is keyed by the decode settings and every file's path, size and mtime, so changing,
adding or deleting a photo rebuilds it. It is memory-mapped, not read into RAM: a 224-pixel cache of
25,000 photos is 3.8 GB, epochs touch its pages through the OS page cache, and DDP processes on one
machine share those pages. Its pixels carry a checksum: a truncated or corrupt file is
detected and rebuilt, never trusted. Writes go to a temporary file that is renamed into place, so a
run killed mid-write leaves the old cache (or none), never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..storage.atomic import atomic_write, remove_stale_temporaries
from .decode import DecodeFailure, decode_many
from .scan import ImageFile

log = logging.getLogger(__name__)
CACHE_FORMAT = 3  # bump when the decode path changes what pixels it produces (3: only FORMATS are read)


@dataclass
class DecodedImages:
    images: torch.Tensor  # N x 3 x S x S uint8
    labels: torch.Tensor  # N int64, 1 = cat
    paths: list[str]
    failures: list[DecodeFailure]
    from_cache: bool = False
    key: str = ""  # content_key: what these pixels are, for caches derived from them (backbone features)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "catdog_lightning"


def content_key(files: list[ImageFile], size: int, draft: bool) -> str:
    listing = [(f.path, f.size, f.mtime_ns, f.label) for f in files]
    blob = json.dumps({"format": CACHE_FORMAT, "size": size, "draft": draft, "files": listing})
    return hashlib.sha256(blob.encode()).hexdigest()


def _checksum(images: torch.Tensor, labels: torch.Tensor, paths: list[str], failures: list[list[str]]) -> int:
    """CRC32 of the whole payload: pixels, labels, paths and failures (a flipped label byte is caught too).

    It catches accidental damage (a flipped bit, a torn write) cheaply; nobody forges a cache.
    """
    crc = zlib.crc32(images.contiguous().numpy().data)
    crc = zlib.crc32(labels.contiguous().numpy().data, crc)
    return zlib.crc32(json.dumps([paths, failures]).encode(), crc)


def cache_path(cache_dir: str | os.PathLike, root: str | os.PathLike, size: int, draft: bool) -> Path:
    """One slot per (folder, settings): a changed folder overwrites its slot instead of piling up files."""
    slot = hashlib.sha256(f"{Path(root).absolute()}|{size}|{draft}".encode()).hexdigest()[:20]
    return Path(cache_dir) / f"decoded-{slot}.pt"


def _read_cache(path: Path, key: str) -> DecodedImages | None:
    if not path.exists():
        return None
    try:
        blob = torch.load(path, weights_only=True, mmap=True)
        images, labels = blob["images"], blob["labels"]
        valid = (
            blob["key"] == key
            and images.dtype == torch.uint8
            and images.shape[0] == labels.shape[0] == len(blob["paths"])
            and _checksum(images, labels, blob["paths"], [blob["failed_paths"], blob["failed_reasons"]])
            == blob["checksum"]
        )
    except Exception as exc:  # truncated zip, bad pickle, missing field: all mean "rebuild"
        log.warning("Decode cache %s is unreadable (%s); rebuilding it.", path, type(exc).__name__)
        return None
    if not valid:
        return None
    failures = [DecodeFailure(p, r) for p, r in zip(blob["failed_paths"], blob["failed_reasons"], strict=True)]
    return DecodedImages(images, labels, list(blob["paths"]), failures, from_cache=True, key=key)


def _write_cache(path: Path, key: str, decoded: DecodedImages) -> None:
    failed = [[f.path for f in decoded.failures], [f.reason for f in decoded.failures]]
    blob = {
        "key": key,
        "images": decoded.images,
        "labels": decoded.labels,
        "paths": decoded.paths,
        "failed_paths": failed[0],
        "failed_reasons": failed[1],
        "checksum": _checksum(decoded.images, decoded.labels, decoded.paths, failed),
    }
    # Left by runs killed while writing (not a live one's: an hour old), and only our own cache files'.
    remove_stale_temporaries(path.parent, older_than_s=3600, names=("decoded-", "features-"))
    atomic_write(path, lambda fh: torch.save(blob, fh))


def decode_files(files: list[ImageFile], size: int, draft: bool = True, desc: str = "decoding") -> DecodedImages:
    images, kept, failures = decode_many([f.path for f in files], size, draft, desc=desc)
    labels = torch.tensor([files[i].label for i in kept], dtype=torch.int64)
    return DecodedImages(torch.from_numpy(images), labels, [files[i].path for i in kept], failures)


def load_or_decode(
    files: list[ImageFile],
    root: str | os.PathLike,
    size: int,
    draft: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> DecodedImages:
    """Decoded pixels of ``files``: from the cache when it is valid, else decoded (and cached)."""
    key = content_key(files, size, draft)
    if cache_dir is None:
        decoded = decode_files(files, size, draft, desc=f"decoding {root}")
        decoded.key = key
        return decoded
    path = cache_path(cache_dir, root, size, draft)
    cached = _read_cache(path, key)
    if cached is not None:
        return cached
    decoded = decode_files(files, size, draft, desc=f"decoding {root} (cached after this)")
    decoded.key = key
    try:
        _write_cache(path, key, decoded)
    except (OSError, RuntimeError) as exc:  # a read-only or full disk (torch: RuntimeError) costs speed, not the run
        needed = decoded.images.numel() / 1e6
        log.warning(
            "Could not write the decode cache %s (%s): it needs about %.1f MB in %s; this run goes on uncached.",
            path, " ".join(str(exc).split())[:120], needed, path.parent,
        )  # fmt: skip
        return decoded
    # From here on the run reads the memory-mapped file, as every later run will: the private copy is
    # dropped first, so the pixels are never in memory twice.
    del decoded
    mapped = _read_cache(path, key)
    if mapped is None:  # the file we just wrote is gone or damaged (another process, a full disk)
        mapped = decode_files(files, size, draft, desc=f"decoding {root}")
        mapped.key = key
    mapped.from_cache = False  # decoded by this run, as its summary says
    return mapped


__all__ = ["DecodedImages", "cache_path", "default_cache_dir", "load_or_decode"]
