"""Photos as LitData shards: written once by ``scripts/shard.py``, streamed from a folder or an object store.

LitData does the work: ``optimize`` packs each split's photos (their compressed bytes, a label and the source
path) into chunk files with an ``index.json``; ``StreamingDataset`` reads them from a folder or an ``s3://`` URL,
keeping at most ``max_cache_size`` of downloaded chunks on local disk; ``StreamingDataLoader`` shuffles chunk by
chunk across processes and nodes, and its ``state_dict`` (which Lightning keeps in every checkpoint) resumes an
epoch where it stopped. Ours is the glue: the split is made when the shards are written, by the same code and
seed as the folder path (so the shards hold exactly the photos of the folder's train, validation and test
splits), a manifest beside them keeps the class names and each split's labels and paths in shard order, and
photos are decoded in the loader's workers by :func:`~.decode.decode_image`, at the recipe's size.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError, reason
from .datasets import DecodedImageDataset
from .decode import decode_image

MANIFEST = "catdog_shards.json"
MANIFEST_FORMAT = 1
SPLITS = ("train", "val", "test")
REMOTE_SCHEMES = ("s3://", "gs://", "r2://")
SPLIT_SETTINGS = ("val_fraction", "test_fraction", "split_seed")


def litdata():
    """LitData (the ``stream`` extra), or one line saying how to install it."""
    try:
        import litdata
    except ImportError:
        raise ConfigError("shards are written and read by LitData: pip install -e '.[stream]'") from None
    return litdata


def is_remote(url: str | os.PathLike) -> bool:
    return isinstance(url, str) and url.startswith(REMOTE_SCHEMES)


def is_shards(data_dir: str | os.PathLike | None) -> bool:
    """Whether ``--data.data_dir`` names shards (an object-store URL, or a folder holding a manifest)."""
    return data_dir is not None and (is_remote(data_dir) or (Path(data_dir) / MANIFEST).is_file())


def folder_bytes(folder: str | os.PathLike) -> int:
    """What a folder's files hold, in bytes (the shards, or a decode cache: the disk each way takes)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def holds_only_shards(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but shards (whole, or what a stopped scripts/shard.py left): safe to replace."""
    return all(
        (entry.name in SPLITS and entry.is_dir()) or entry.name == MANIFEST or entry.suffix == ".tmp"
        for entry in folder.iterdir()
    )


def _photo(entry: tuple[str, int]) -> dict:
    """One photo as stored: its file's bytes as they are (still compressed), its label and where it came from
    (as bytes: LitData would store a string naming a file as that file's contents)."""
    path, label = entry
    return {"image": Path(path).read_bytes(), "label": label, "path": os.fsencode(path)}


def _path(item: dict) -> str:
    return os.fsdecode(bytes(item["path"]))


def read_back(folder: Path) -> tuple[list[str], list[int]]:
    """Paths and labels of a written split in its shards' index order (LitData's workers may write out of order)."""
    stream = litdata().StreamingDataset(str(folder))
    items = [stream[i] for i in range(len(stream))]
    return [_path(item) for item in items], [int(item["label"]) for item in items]


def write_shards(
    splits: dict[str, DecodedImageDataset],
    classes: Sequence[str],
    output: str | os.PathLike,
    settings: dict,
    workers: int = 1,
    chunk_bytes: str = "64MB",
) -> dict:
    """LitData ``optimize`` of each split's photo files into ``output/<split>/``, then the manifest beside them.

    ``splits`` come from the folder path (:meth:`CatDogDataModule.setup`, which checked, labelled and split
    them); ``settings`` are the split's settings and where the photos were, kept in the manifest.
    """
    optimize = litdata().optimize
    output = Path(output).absolute()
    manifest = {"format": MANIFEST_FORMAT, "classes": list(classes), **settings, "splits": {}}
    for name, split in splits.items():
        entries = list(zip(split.paths, split.labels.tolist(), strict=True))
        optimize(
            _photo,
            entries,
            output_dir=str(output / name),
            chunk_bytes=chunk_bytes,
            num_workers=min(workers, len(entries)),
            mode="overwrite",
            start_method="fork" if "fork" in multiprocessing.get_all_start_methods() else None,
            verbose=False,
        )
        paths, labels = read_back(output / name)
        manifest["splits"][name] = {"paths": paths, "labels": labels}
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    manifest["key"] = digest  # names these shards' contents, for caches derived from them (backbone features)
    with tempfile.NamedTemporaryFile("w", dir=output, suffix=".tmp", delete=False) as fh:
        json.dump(manifest, fh)
    os.replace(fh.name, output / MANIFEST)
    return manifest


def read_manifest(url: str, storage_options: dict | None = None) -> dict:
    """The manifest of the shards at ``url`` (a folder, or an object-store URL fetched by LitData's own client)."""
    if is_remote(url):
        litdata()
        from litdata.streaming.fs_provider import _get_fs_provider

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / MANIFEST
            try:
                _get_fs_provider(url, storage_options).download_file(f"{url.rstrip('/')}/{MANIFEST}", str(local))
                text = local.read_text()
            except Exception as exc:
                raise DataError(
                    f"--data.data_dir {url}: cannot read {MANIFEST} there ({reason(exc)}); check the URL and your "
                    "credentials (AWS_* variables), or write the shards with scripts/shard.py and upload the folder."
                ) from None
    else:
        text = (Path(url) / MANIFEST).read_text()
    try:
        manifest = json.loads(text)
        assert manifest["format"] == MANIFEST_FORMAT and len(manifest["classes"]) >= 2
        assert set(manifest["splits"]) <= set(SPLITS) and "train" in manifest["splits"]
    except (ValueError, KeyError, TypeError, AssertionError):
        raise DataError(
            f"--data.data_dir {url}: {MANIFEST} is not one scripts/shard.py wrote; write the shards again."
        ) from None
    return manifest


def check_split_settings(manifest: dict, url: str, given: dict) -> None:
    """The split is the shards' own (made when they were written): a run asking for another is told how."""
    for name in SPLIT_SETTINGS:
        if name == "test_fraction" and not manifest["test_is_carved"]:
            continue  # a test/ folder was sharded as it is
        if given[name] != manifest[name]:
            raise ConfigError(
                f"--data.{name} {given[name]} differs from {manifest[name]}, with which the shards at {url} were "
                f"split; pass --data.{name} {manifest[name]}, or write them again with scripts/shard.py --{name} "
                f"{given[name]}."
            )


def decoded(item: dict, size: int, draft: bool) -> tuple[torch.Tensor, int]:
    """A stored photo as the folder path gives it: ``3 x size x size`` uint8 pixels and its label."""
    try:
        pixels = decode_image(bytes(item["image"]), size, draft)
    except Exception as exc:
        raise DataError(
            f"{_path(item)} (in the shards) cannot be decoded: {reason(exc)}; write the shards again with "
            "scripts/shard.py, which leaves unreadable photos out."
        ) from None
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), int(item["label"])


def stream(url: str, size: int, draft: bool, cache_dir: str | None, max_cache: str, **options):
    """LitData's ``StreamingDataset`` of one split, its photos decoded as they are read."""
    return litdata().StreamingDataset(
        url,
        cache_dir=cache_dir,
        max_cache_size=max_cache,
        transform=partial(decoded, size=size, draft=draft),
        **options,
    )


def streaming_loader(dataset, epoch: Callable[[], int | None], **options):
    """LitData's ``StreamingDataLoader``, each epoch shuffled as the training loop's epoch ``epoch()`` says.

    LitData counts epochs itself, from 1 as a loader is made, and it forgets that it was resumed
    mid-epoch (``restore``) only when asked for a batch past the epoch's last, which Lightning never asks for
    (it knows the length): the next epoch would replay the resumed one's order (LitData's issue #770 describes
    it for an epoch cut short); and a state saved at an epoch's end, which Lightning does hand over, would replay
    that epoch. Here the epoch a checkpoint stopped inside goes on from its saved state, and every other one
    starts afresh at the loop's epoch.
    """

    class Loader(litdata().StreamingDataLoader):
        _resuming = False

        def load_state_dict(self, obj: dict) -> None:
            super().load_state_dict(obj)
            self._resuming = True

        def __iter__(self):
            now = epoch()
            # The saved state goes on only into the epoch it was saved in (a run saved at an epoch's end has
            # all of that epoch's photos behind it); LitData numbers epochs from 1.
            resume = self._resuming and (now is None or self.current_epoch == now + 1)
            self.restore, self._resuming = self.restore and resume, False
            if not self.restore and now is not None:
                self.current_epoch = now  # LitData adds one as the epoch starts
            return super().__iter__()

    return Loader(dataset, **options)


class StreamedPixels:
    """A split's pixels by index, read from its shards as they are asked for: the ``images`` a
    :class:`DecodedImageDataset` looks rows up in (for evaluation in index order, grids of pictures, statistics
    and a probe's features), where the folder path has a decoded tensor."""

    def __init__(self, url: str, size: int, draft: bool, cache_dir: str | None, max_cache: str, count: int):
        self.args, self.count = (url, size, draft, cache_dir, max_cache), count
        self._stream = None

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> dict:  # a loader's worker opens the shards itself
        return {**self.__dict__, "_stream": None}

    def __getitem__(self, rows) -> torch.Tensor:
        if self._stream is None:
            self._stream = stream(*self.args)
        if isinstance(rows, slice):
            rows = range(*rows.indices(self.count))
        elif isinstance(rows, torch.Tensor) and rows.ndim == 0 or isinstance(rows, int):
            return self._stream[int(rows)][0]
        return torch.stack([self._stream[int(i)][0] for i in rows]) if len(rows) else torch.empty(0, dtype=torch.uint8)


def open_split(
    url: str, name: str, manifest: dict, size: int, draft: bool, cache_dir, max_cache
) -> DecodedImageDataset:
    """One split of the shards as the dataset the folder path makes, its labels and paths from the manifest."""
    listed = manifest["splits"][name]
    location = f"{url.rstrip('/')}/{name}"
    cache = os.path.join(cache_dir, name) if cache_dir else None  # one folder a split: their chunks' names clash
    pixels = StreamedPixels(location, size, draft, cache, max_cache, len(listed["labels"]))
    key = f"{manifest['key']}|{name}|{size}|{draft}"
    return DecodedImageDataset(pixels, torch.tensor(listed["labels"]), None, listed["paths"], key)


__all__ = ["MANIFEST", "is_shards", "open_split", "read_manifest", "stream", "streaming_loader", "write_shards"]
