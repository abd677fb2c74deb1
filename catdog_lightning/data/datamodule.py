"""``CatDogDataModule``: labelled image folders -> decoded once -> seeded splits -> batches.

Just over 250 lines because Lightning wants the whole data side on one class (its hooks, loaders and the
argument docs the command line is built from); decoding, caching, datasets, sampling, skipped-file
reports and backbone features live in their own modules beside it.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from ..classes import CATDOG_CLASSES, is_catdog
from ..errors import CatDogWarning, ConfigError, DataError
from ..storage.checkpoints import MAX_IMAGE_SIZE
from .augment import flip_and_crop
from .cache import DecodedImages, default_cache_dir, load_or_decode
from .datasets import DecodedImageDataset, FeatureDataset
from .features import Extractor, load_or_extract
from .overlap import check_overlap
from .sampling import EpochShardSampler
from .scan import CAT, ScanResult, printable, scan_labelled_folder
from .shards import (
    MANIFEST,
    check_split_settings,
    is_remote,
    is_shards,
    open_split,
    read_manifest,
    stream,
    streaming_loader,
)
from .skipped import skipped_files, warn_skipped
from .split import stratified_split
from .synthetic import DEFAULT_BUILTIN_DIR, ensure_builtin_dataset

MAX_BATCH_SIZE = 65_536


def class_counts(labels: torch.Tensor, classes: Sequence[str]) -> str:
    """``490 cat / 460 dog`` (the lesson's order), or each class's count: ``hat 123, pants 468, ...``."""
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    if is_catdog(classes):
        return f"{counts[CAT]} cat / {counts[CAT - 1]} dog"
    return ", ".join(f"{name} {count}" for name, count in zip(classes, counts, strict=True))


class SmallClassWarning(CatDogWarning):
    """A class has too few photos to have any in one of the splits."""


def warn_small_classes(labels: np.ndarray, parts: list[np.ndarray], names: Sequence[str], classes: Sequence[str]):
    """One warning per class that the seeded split left without a photo in some split (train, val or test)."""
    for label, cls in enumerate(classes):
        empty = [name for name, part in zip(names, parts, strict=True) if not (labels[part] == label).any()]
        if empty:
            total = int((labels == label).sum())
            warnings.warn(
                f"class {cls} has {total} photo(s): none in {' or '.join(empty)} (its share rounds to 0); add "
                f"photos of {cls} or change --data.val_fraction / --data.test_fraction.",
                SmallClassWarning,
                stacklevel=3,
            )


class CatDogDataModule(L.LightningDataModule):
    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 32,
        image_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 42,
        num_workers: int = 0,
        augment: bool = False,
        min_crop_scale: float = 0.8,
        cache: bool = True,
        cache_dir: str | None = None,
        draft: bool = True,
        normalize: bool = False,
        strict_splits: bool = False,
        stream_cache_size: str | None = None,
    ):
        """Photos from ``<data_dir>/train`` and, if present, ``<data_dir>/test``, in one sub-folder per class.

        Args:
            data_dir: folder holding train/ (and optionally test/); each in class sub-folders (any names, any
                number: train/hat/, train/shoes/, ...; cat/ and dog/ for the lesson), or flat with cat/dog in
                the file names. Or shards scripts/shard.py wrote: their folder, or an s3:// URL of it (streamed,
                split as they were written). None: the built-in synthetic cat/dog pictures.
            batch_size: images per batch.
            image_size: images are resized to image_size x image_size.
            val_fraction: share of each class in train/ held out for validation (seeded, stratified).
            test_fraction: share carved from train/ as the test split when there is no test/ folder.
            split_seed: seed of the train/val(/test) split, independent of the training seed.
            num_workers: DataLoader worker processes (0 is fastest here: batches come from memory).
            augment: random horizontal flip and random resized crop of training images.
            min_crop_scale: with augment, each crop keeps a random share in [min_crop_scale, 1] of each
                side of the picture (smaller = stronger augmentation).
            cache: keep decoded images on disk so later runs skip decoding.
            cache_dir: where the decode cache lives (default ~/.cache/catdog_lightning).
            draft: let libjpeg decode large JPEGs at reduced scale before resizing (much faster).
            normalize: standardise each colour channel with the training split's mean and std; the model
                keeps the statistics, so checkpoints, predict.py and exports apply them too.
            strict_splits: stop when test or validation images have the same pixels as training images (the
                same folder given twice, or copied photos); off, a warning counts them.
            stream_cache_size: with shards at a URL, how much of them to keep on local disk (e.g. 20GB; the
                oldest chunks are dropped beyond it); None: LitData's default, 75% of the free disk.
        """
        super().__init__()
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(
                f"--data.batch_size must be between 1 and {MAX_BATCH_SIZE:,}, got {batch_size}: a batch is held in "
                "memory at once (the lesson uses 32)."
            )
        if not 8 <= image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(
                f"--data.image_size must be between 8 and {MAX_IMAGE_SIZE}, got {image_size}: every photo is kept "
                "decoded at this size (the lesson uses 64, pretrained networks 224-260)."
            )
        if not 0 <= split_seed < 2**32:
            raise ConfigError(f"--data.split_seed must be between 0 and 2**32 - 1 (NumPy's seeds), got {split_seed}.")
        # val_fraction 0 (no validation) serves the NumPy network, which trains on all of train/ like the lesson.
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"--data.val_fraction must be in [0, 1), got {val_fraction}; try 0.1.")
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(
                f"--data.test_fraction must be between 0 and 1 (exclusive), got {test_fraction}; try 0.1."
            )
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError("--data.val_fraction + --data.test_fraction must be below 1, leaving images to train on.")
        if not 0.0 < min_crop_scale <= 1.0:
            raise ConfigError(f"--data.min_crop_scale must be in (0, 1], got {min_crop_scale}; try 0.8.")
        if num_workers < 0:
            raise ConfigError(f"--data.num_workers must be 0 or more, got {num_workers}.")
        # Absolute, so a resumed run or evaluate.py finds the photos from any working directory.
        if data_dir is not None and not is_remote(data_dir):
            data_dir = str(Path(data_dir).expanduser().absolute())
        self.save_hyperparameters()
        self.train_set: DecodedImageDataset | None = None
        self.val_set: DecodedImageDataset | None = None
        self.test_set: DecodedImageDataset | None = None
        self.test_is_carved = False
        self.summary = ""
        self._scanned: dict[Path, ScanResult] = {}
        self._loaded: dict[Path, DecodedImages] = {}
        self.sampling_seed = split_seed  # the training seed, which train() hands over: shuffling and augmentation
        self.test_skipped: list[tuple[str, str]] = []  # (path, reason) of the test folder's unused files
        self._features: dict[str, FeatureDataset] = {}
        self._classes: tuple[str, ...] | None = None
        self._manifest: dict | None = None

    @cached_property
    def streams(self) -> bool:
        """Whether the photos come from shards (scripts/shard.py), streamed by LitData: decided once, by the first
        look at the folder (every stage of a run then reads the photos the same way)."""
        return is_shards(self.hparams.data_dir)

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = read_manifest(self.hparams.data_dir)
        return self._manifest

    def place(self, split: str) -> str:
        """Where a split's photos are, in words for a message: the folder, or the shards."""
        if self.streams:
            return f"the shards at {self.hparams.data_dir} ({split})"
        if split == "test" and self.test_is_carved:
            return f"{self.root / 'train'} (the test split carved from it)"
        return str(self.root / split)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes, in label order: train/'s class folders (sorted), or the lesson's ("dog", "cat")."""
        if self._classes is None and self.hparams.data_dir is None:  # the built-in pictures: the lesson's
            self._classes = CATDOG_CLASSES
        if self._classes is None and self.streams:
            self._classes = tuple(self.manifest["classes"])
        if self._classes is None:
            self._classes = self._scan(self._folders()[0]).classes  # a listing: nothing decoded yet
        return self._classes

    @property
    def root(self) -> Path:
        return Path(self.hparams.data_dir) if self.hparams.data_dir is not None else DEFAULT_BUILTIN_DIR

    @property
    def _cache_dir(self) -> str | None:
        if not self.hparams.cache:
            return None
        return self.hparams.cache_dir or str(default_cache_dir())

    def prepare_data(self) -> None:
        """Runs once per machine: make the built-in data if needed and warm the decode cache."""
        if self.train_set is not None or self.test_set is not None:  # set up already (Lightning calls it again)
            return
        if self.hparams.data_dir is None:
            ensure_builtin_dataset(DEFAULT_BUILTIN_DIR)
        if self._cache_dir is not None and not self.streams:
            for folder in self._folders():
                self._load(folder, self.class_names if folder.name == "test" else None)

    def _folders(self) -> list[Path]:
        train = self.root / "train"
        if self.root.is_file():
            raise DataError(f"--data.data_dir {self.root} is a file; point it at the folder holding train/.")
        if not self.root.is_dir():
            raise DataError(
                f"--data.data_dir {self.root} does not exist; point it at a folder holding train/ "
                "(with cat/ and dog/ inside, or cat.N.jpg / dog.N.jpg files)."
            )
        if (train / "index.json").is_file():  # LitData's, without our manifest beside it
            raise DataError(
                f"--data.data_dir {self.root} holds shards without {MANIFEST} (scripts/shard.py stopped before it "
                "finished?); run scripts/shard.py again."
            )
        if not train.is_dir():
            raise DataError(
                f"--data.data_dir {self.root} has no train/ folder; put the labelled images in "
                f"{train}/cat and {train}/dog (or name them cat.N.jpg / dog.N.jpg)."
            )
        test = self.root / "test"
        return [train, test] if test.is_dir() else [train]

    def _scan(self, folder: Path, classes: Sequence[str] | None = None) -> ScanResult:
        """List ``folder``'s labelled images once per process; ``classes``: read it with these (a test folder:
        train/'s, or a model's)."""
        if folder not in self._scanned:
            self._scanned[folder] = scan_labelled_folder(folder, classes)
        return self._scanned[folder]

    def _load(self, folder: Path, classes: Sequence[str] | None = None) -> tuple[ScanResult, DecodedImages]:
        """Scan and decode ``folder`` once per process (prepare_data and setup share the result)."""
        scan = self._scan(folder, classes)
        if folder not in self._loaded:
            size, draft = self.hparams.image_size, self.hparams.draft
            self._loaded[folder] = load_or_decode(scan.files, folder, size, draft, self._cache_dir)
        return scan, self._loaded[folder]

    def _decode(self, folder: Path, classes: Sequence[str] | None = None) -> DecodedImages:
        scan, decoded = self._load(folder, classes)
        warn_skipped(scan, decoded)
        if len(decoded.labels) == 0:
            raise DataError(f"None of the {len(scan.files)} images in {folder} could be read; see the warning above.")
        return decoded

    def setup_test_folder(self, folder: str | Path, classes: Sequence[str] = CATDOG_CLASSES) -> None:
        """Only a test split: every labelled image of ``folder`` (to score a model of ``classes`` on other photos)."""
        self._classes = tuple(classes)
        scan, decoded = self._load(Path(folder), self._classes)
        self._decode(Path(folder), self._classes)
        self.test_set = DecodedImageDataset.of(decoded)
        self.test_skipped = skipped_files(scan, decoded)
        self.summary = f"Data: test {len(self.test_set)} ({class_counts(decoded.labels, classes)}) from {folder}"

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None or self.test_set is not None:  # done already (by train(), or for a folder)
            return
        if self.streams:
            return self._setup_shards()
        folders = self._folders()
        classes = self.class_names
        train = self._decode(folders[0])
        found = set(train.labels.tolist())
        missing = [name for label, name in enumerate(classes) if label not in found]
        if missing and is_catdog(classes):
            only = "cat" if CAT in found else "dog"
            raise DataError(f"{folders[0]} holds only {only} images; a classifier needs both cats and dogs.")
        if missing:
            raise DataError(
                f"{folders[0] / missing[0]}: none of its photos could be read (see the warning above); add readable "
                f"photos of {printable(missing[0])} or remove the folder."
            )
        fractions = [self.hparams.val_fraction] + ([] if len(folders) > 1 else [self.hparams.test_fraction])
        parts = stratified_split(train.labels.numpy(), fractions, self.hparams.split_seed)
        if any(len(p) == 0 for p, frac in zip(parts, [1.0, *fractions], strict=True) if frac > 0):
            raise DataError(
                f"{folders[0]} has too few images ({len(train.labels)}) to split into train/val"
                f"{'' if len(folders) > 1 else '/test'}; add images or raise --data.val_fraction."
            )
        held = [(name, part) for name, part, frac in zip(["train", "validation", "test"], parts, [1.0, *fractions],
                                                          strict=False) if frac > 0]  # fmt: skip
        warn_small_classes(train.labels.numpy(), [p for _, p in held], [n for n, _ in held], classes)
        self.train_set = DecodedImageDataset.of(train, parts[0])
        self.val_set = DecodedImageDataset.of(train, parts[1]) if len(parts[1]) else None
        if len(folders) > 1:
            test = self._decode(folders[1], classes)
            self.test_set = DecodedImageDataset.of(test)
            self.test_skipped = skipped_files(*self._load(folders[1], classes))
            test_note = f"test {len(self.test_set)} ({class_counts(test.labels, classes)}) from {folders[1]}"
        else:
            self.test_set = DecodedImageDataset.of(train, parts[2])
            self.test_is_carved = True
            test_note = (
                f"test {len(self.test_set)} carved from train/ (no {self.root / 'test'} folder; "
                f"--data.test_fraction {self.hparams.test_fraction})"
            )
        check_overlap(self.train_set, {"test": self.test_set, "validation": self.val_set}, self.hparams.strict_splits)
        source = "cache" if train.from_cache else "decoded"
        self.summary = (
            f"Data: {len(train.labels)} images in {folders[0]} ({class_counts(train.labels, classes)}, {source}) "
            f"-> train {len(self.train_set)} / val {len(self.val_set or [])}; {test_note}"
        )
        self._loaded.clear()  # the datasets hold what they need; free the rest
        self._scanned.clear()

    def _setup_shards(self) -> None:
        """The splits the shards hold (split when written), read by index; training streams (:meth:`_loader`)."""
        url, manifest = self.hparams.data_dir, self.manifest
        check_split_settings(manifest, url, dict(self.hparams))
        size, draft = self.hparams.image_size, self.hparams.draft
        splits = {
            name: open_split(url, name, manifest, size, draft, self._stream_cache, self.hparams.stream_cache_size)
            for name in manifest["splits"]
        }
        self.train_set, self.val_set, self.test_set = splits["train"], splits.get("val"), splits["test"]
        self.test_is_carved = manifest["test_is_carved"]
        self.test_skipped = [tuple(pair) for pair in manifest["skipped"].get("test", [])]
        counts = {name: class_counts(split.labels, self.class_names) for name, split in splits.items()}
        self.summary = (
            f"Data: shards at {url} (photos of {manifest['source']}): train {len(self.train_set)} ({counts['train']}) "
            f"/ val {len(self.val_set or [])} / test {len(self.test_set)} ({counts['test']}), streamed"
        )

    @property
    def _stream_cache(self) -> str | None:
        """Where LitData keeps chunks downloaded from a URL (a local folder of shards is read where it is)."""
        if not is_remote(self.hparams.data_dir or ""):
            return None
        base = Path(self.hparams.cache_dir) if self.hparams.cache_dir else default_cache_dir()
        return str(base / "streams" / hashlib.sha256(self.hparams.data_dir.encode()).hexdigest()[:20])

    def use_features(self, extract: Extractor, key: str) -> str:
        """Serve backbone features instead of pixels: ``extract`` runs once per image (or the cache has it).

        ``key`` names the extractor (its weights and looks); the cache is keyed by it and by the pixels'
        own key. Returns a line saying where the features came from.
        """
        if self.train_set is None:
            raise RuntimeError("CatDogDataModule.setup() must run before use_features()")
        splits = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
        sources = {s.source_key: s.source for s in splits.values() if s is not None}  # folders, each once
        computed, cached = {}, 0
        for source_key, images in sources.items():
            computed[source_key], hit = load_or_extract(images, extract, f"{source_key}|{key}", self._cache_dir)
            cached += hit
        self._features = {
            name: FeatureDataset(computed[split.source_key][split.index], split.labels)
            for name, split in splits.items()
            if split is not None
        }
        return f"Backbone features: {'cache' if cached == len(sources) else 'computed'} ({len(sources)} folder(s))"

    @property
    def serves_features(self) -> bool:
        """Whether batches hold backbone features (after :meth:`use_features`) instead of pixels."""
        return bool(self._features)

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of each colour channel over the training split's pixels, on the [0, 1] scale."""
        if self.train_set is None:
            raise RuntimeError("CatDogDataModule.setup() must run before channel_stats()")
        total = torch.zeros(3, dtype=torch.float64)
        squares = torch.zeros(3, dtype=torch.float64)
        for rows in torch.arange(len(self.train_set)).split(256):  # float64 a chunk at a time: exact, and small
            pixels = self.train_set.take(rows).double()
            total += pixels.sum((0, 2, 3))
            squares += pixels.square().sum((0, 2, 3))
        count = len(self.train_set) * self.hparams.image_size**2
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
        return (mean / 255).float(), (std / 255).float()

    def _loader(self, name: str, train: bool) -> DataLoader:
        if self.streams and train and name not in self._features:
            return self._streaming_loader()
        dataset = self._features[name] if name in self._features else getattr(self, f"{name}_set")
        if dataset is None:
            raise RuntimeError("CatDogDataModule.setup() must run before asking for a dataloader")
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        seed = self.sampling_seed
        batch = self.hparams.batch_size
        sampler = EpochShardSampler(len(dataset), train, seed, rank=rank, world=world, even=train, batch_size=batch)
        workers = self.hparams.num_workers
        # Its own generator: creating an iterator would otherwise draw from the global RNG, and when
        # that happens relative to the epoch's reseed differs between a resumed and an unbroken run.
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def _streaming_loader(self) -> DataLoader:
        """LitData's loader over the training shards: shuffled by (seed, epoch) across processes and nodes, and
        resumable mid-epoch (Lightning keeps its ``state_dict`` in every checkpoint)."""
        if self.train_set is None:
            raise RuntimeError("CatDogDataModule.setup() must run before asking for a dataloader")
        dataset = stream(*self.train_set.source.args, shuffle=True, seed=self.sampling_seed)
        workers, batch = self.hparams.num_workers, self.hparams.batch_size
        world = self.trainer.world_size if self.trainer is not None else 1
        if world > 1 and len(self.train_set) // world < batch:  # LitData gives each process whole batches only
            raise DataError(
                f"{len(self.train_set)} training photos shared by {world} processes give none a whole batch of "
                f"{batch}; lower --data.batch_size or train on fewer processes."
            )
        return streaming_loader(
            dataset,
            epoch=self._epoch,
            batch_size=batch,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.sampling_seed),  # as in _loader: not the global RNG
        )

    def _epoch(self) -> int | None:
        """The epoch the training loop starts: the number Lightning hands samplers (``set_epoch``), which a run
        resumed at an epoch's end has right before its ``current_epoch`` catches up."""
        return self.trainer.fit_loop.epoch_progress.current.processed if self.trainer is not None else None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 -> float in [0, 1] on the target device (4x less to copy), then augment training batches."""
        images, labels = batch
        if self.serves_features:  # a linear probe's backbone features: nothing to convert or augment
            return images, labels
        images = images.float().div_(255.0)
        if self.hparams.augment and self.trainer is not None and self.trainer.training:
            images = flip_and_crop(images, self.hparams.min_crop_scale)
        return images, labels
