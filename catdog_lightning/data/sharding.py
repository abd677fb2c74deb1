"""``scripts/shard.py``: a photo folder -> LitData shards of its train, validation and test splits."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError
from .datamodule import CatDogDataModule
from .decode import available_cores
from .shards import folder_bytes, holds_only_shards, is_remote, write_shards

CHECK_SIZE = 32  # photos are decoded once at this size to leave unreadable ones out (the shards keep the files)


def shard_folder(
    data_dir: str,
    output: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 42,
    workers: int | None = None,
) -> dict:
    """Scan, check and split ``data_dir`` as training would (the same code and seed: the same photos in each
    split), then write each split's photo files as shards under ``output``. Returns the manifest."""
    if is_remote(output):
        raise ConfigError(
            f"--output {output}: write the shards to a local folder, then copy it to the object store "
            "(e.g. aws s3 sync FOLDER s3://bucket/path), and train with --data.data_dir s3://bucket/path."
        )
    if Path(output).is_file() or (Path(output).is_dir() and not holds_only_shards(Path(output))):
        raise ConfigError(f"--output {output} holds other files; give a new or empty folder.")
    data = CatDogDataModule(
        data_dir, image_size=CHECK_SIZE, val_fraction=val_fraction, test_fraction=test_fraction,
        split_seed=split_seed, cache=False,
    )  # fmt: skip
    data.setup()
    splits = {"train": data.train_set, "val": data.val_set, "test": data.test_set}
    settings = {
        "source": data.hparams.data_dir,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "split_seed": split_seed,
        "test_is_carved": data.test_is_carved,
        "skipped": {"test": data.test_skipped},
    }
    workers = available_cores() if workers is None else workers
    return write_shards({k: v for k, v in splits.items() if v is not None}, data.class_names, output, settings, workers)


def shard_command(args: dict) -> None:
    start = time.perf_counter()
    manifest = shard_folder(
        args["data_dir"], args["output"], args["val_fraction"], args["test_fraction"], args["split_seed"],
        args["workers"],
    )  # fmt: skip
    counts = ", ".join(f"{name} {len(split['labels'])}" for name, split in manifest["splits"].items())
    size = folder_bytes(args["output"])
    print(
        f"Wrote {counts} photos of {len(manifest['classes'])} classes ({', '.join(manifest['classes'])}) to "
        f"{args['output']}: {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s. Train from them with "
        f"python scripts/train.py --data.data_dir {args['output']}"
    )
