"""What the benchmark times, each body run in a fresh Python process (``python -m
lab.benchmark.phases --phase NAME ...``), printing its result as one JSON line.

A fresh process per measurement keeps imports, the page cache of our own tensors and peak RSS from leaking
between them. The phases: the lesson's loop, the project as a user runs it (the MLP or the CNN recipe), the
decode-cache build, and bare loops doing the same work without Lightning (the compute floors).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from catdog_lightning.data import CatDogDataModule, scan_folder
from catdog_lightning.data.augment import flip_and_crop
from catdog_lightning.data.cache import load_or_decode
from catdog_lightning.data.shards import folder_bytes
from catdog_lightning.models import MLP, schedules
from catdog_lightning.models.backbones import build_backbone
from catdog_lightning.models.cnn import SmallCNN
from catdog_lightning.models.layers import Standardize, average_views, zoom_margin

from ..lesson import BATCH, IMAGE_SIZE, LessonDataset, fit_epochs

# The CNN recipe the CNN rows time: the project runs it as a user would, the bare loop does the same work.
CNN_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "cnn-fast.yaml"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def phase_lesson(data_dir: str, epochs: int, **_) -> dict:
    files = scan_folder(Path(data_dir) / "train").files
    loader = DataLoader(LessonDataset(files), batch_size=BATCH, shuffle=True)
    torch.manual_seed(0)
    times = fit_epochs(MLP(IMAGE_SIZE), lambda: loader, epochs, fused=False)
    return {"epoch_s": times, "images": len(files)}


def _datamodule(data_dir: str, cache_dir: str) -> CatDogDataModule:
    dm = CatDogDataModule(data_dir, image_size=IMAGE_SIZE, batch_size=BATCH, cache_dir=cache_dir)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def phase_floor(data_dir: str, epochs: int, cache_dir: str, **_) -> dict:
    """The same MLP and optimiser on float tensors already in memory: no data pipeline at all."""
    train_set = _datamodule(data_dir, cache_dir).train_set
    images, labels = train_set.images.float() / 255, train_set.labels
    n = len(labels)

    def batches():
        order = torch.randperm(n)
        for i in range(0, n, BATCH):
            idx = order[i : i + BATCH]
            yield images[idx], labels[idx]

    torch.manual_seed(0)
    return {"epoch_s": fit_epochs(MLP(IMAGE_SIZE), batches, epochs, fused=True), "images": n}


def phase_cache_build(data_dir: str, cache_dir: str, **_) -> dict:
    folder = Path(data_dir) / "train"
    start = time.perf_counter()
    files = scan_folder(folder).files
    decoded = load_or_decode(files, folder, IMAGE_SIZE, True, cache_dir)
    return {
        "seconds": time.perf_counter() - start,
        "images": len(decoded.labels),
        "tensor_mb": decoded.images.numel() / 2**20,
    }


class _EpochTimer(L.Callback):
    def __init__(self, start: float):
        self.start, self.first_step_s, self.train_epoch_s, self._epoch = start, None, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step_s is None:
            self.first_step_s = time.perf_counter() - self.start

    def on_train_epoch_start(self, trainer, pl_module):
        _sync(pl_module.device)
        self._epoch = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        _sync(pl_module.device)
        self.train_epoch_s.append(time.perf_counter() - self._epoch)


def _cnn_recipe(precision: str) -> dict:
    """The recipe's settings as ``scripts/train.py --config configs/cnn-fast.yaml`` would read them."""
    from catdog_lightning.cli import parse_flags

    return parse_flags(["--config", str(CNN_RECIPE), "--trainer.precision", precision])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # GPU work is queued: wait for it before reading the clock
        torch.cuda.synchronize(device)


def phase_project(
    data_dir: str,
    epochs: int,
    cache_dir: str,
    model: str = "mlp",
    precision: str = "32-true",
    accelerator: str = "cpu",
    threads: int = 0,
    workers: int = 0,
    data_size: int = 0,
    **_,
) -> dict:
    """``scripts/train.py`` as a user runs it (the default MLP, or the CNN recipe), timed per epoch; ``data_size``:
    at another image size than the recipe's."""
    from catdog_lightning.training import train

    if threads:
        torch.set_num_threads(threads)
    config = _cnn_recipe(precision) if model == "cnn" else {"data": {"image_size": IMAGE_SIZE, "batch_size": BATCH}}
    config["data"].update(data_dir=data_dir, cache_dir=cache_dir, num_workers=workers)
    if data_size:
        config["data"]["image_size"] = data_size
    config["trainer"] = {
        **config.get("trainer", {}),
        "precision": precision,
        "max_epochs": epochs,
        "accelerator": accelerator,
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    config["logs_dir"] = tempfile.mkdtemp(prefix="catdog-bench-logs-")
    start = time.perf_counter()
    timer = _EpochTimer(start)
    train(config, callbacks=[timer])
    total = time.perf_counter() - start
    return {
        "epoch_s": timer.train_epoch_s,
        "first_step_s": timer.first_step_s,
        "total_s": total,
        "threads": torch.get_num_threads(),
    }


def phase_cnn_floor(
    data_dir: str, epochs: int, cache_dir: str, precision: str = "32-true", accelerator: str = "cpu", **_
) -> dict:
    """The recipe's work with no framework: the same network, precision, augmentation, optimiser, schedule
    and per-epoch validation (with its test-time looks), on the decoded tensors held on the device."""
    recipe = _cnn_recipe(precision)
    dm = CatDogDataModule(**{**recipe["data"], "data_dir": data_dir, "cache_dir": cache_dir})
    dm.prepare_data()
    dm.setup("fit")
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    hp = recipe["model"]
    torch.manual_seed(0)
    net = SmallCNN(**hp["net"]["init_args"]).to(device)
    standardize = Standardize().to(device)
    standardize.set_statistics(*(t.to(device) for t in dm.channel_stats()))
    train_x, train_y = dm.train_set.take(slice(None)).to(device), dm.train_set.labels.float().to(device)
    val_x = dm.val_set.take(slice(None)).to(device)
    steps = -(-len(train_y) // BATCH)
    opt = torch.optim.AdamW(net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"], fused=True)
    plan = schedules.build(hp["scheduler"], opt, hp["lr"], steps * epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    looks = (hp["tta_flip"], zoom_margin(recipe["data"]["image_size"], hp["tta_zoom"]))
    autocast = lambda: torch.autocast(device.type, torch.bfloat16, enabled=precision.startswith("bf16"))  # noqa: E731
    times = []
    for _ in range(epochs):
        _sync(device)
        start = time.perf_counter()
        net.train()
        for idx in torch.randperm(len(train_y), device=device).split(BATCH):
            images = flip_and_crop(train_x[idx].float().div_(255))
            with autocast():
                loss = loss_fn(net(standardize(images)), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            plan.step()
        net.eval()
        with torch.no_grad(), autocast():
            for batch in val_x.split(BATCH):
                average_views(net, standardize(batch.float().div_(255)), *looks)
        _sync(device)
        times.append(time.perf_counter() - start)
    return {"epoch_s": times, "images": len(train_y), "image_size": recipe["data"]["image_size"]}


def phase_backbone(arch: str, image_size: int, precision: str = "32-true", what: str = "features", **_) -> dict:
    """Images/s of a pretrained backbone at a recipe's size: its features under no_grad (what a probe computes
    once per photo, in batches of FEATURE_BATCH), or a training step of the whole network (forward, backward,
    AdamW; batch 16, BatchNorm frozen), in fp32 or under bf16 autocast. Random weights: the speed is the same."""
    from catdog_lightning.models.features import FEATURE_BATCH
    from catdog_lightning.training.allocator import keep_freed_memory

    keep_freed_memory()
    torch.manual_seed(0)
    backbone, size = build_backbone(arch, image_size)
    head = torch.nn.Linear(size, 1)
    batch = FEATURE_BATCH if what == "features" else 16
    images = torch.rand(batch, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    labels = torch.rand(batch)
    bf16 = precision.startswith("bf16")
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=1e-4, fused=True)

    def one() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            if what == "features":
                with torch.no_grad():
                    backbone.eval()(images)
                return
            logits = head(backbone.eval()(images)).squeeze(-1).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):  # oneDNN picks its kernels on the first calls
        one()
    steps = 64 // batch if what == "features" else 4
    start = time.perf_counter()
    for _ in range(steps):
        one()
    return {"images_per_s": steps * batch / (time.perf_counter() - start)}


def folder_mb(folder: str | Path) -> float:
    return folder_bytes(folder) / 1e6


def phase_shard_write(data_dir: str, cache_dir: str, **_) -> dict:
    """``scripts/shard.py``: the photo folder written as LitData shards (into ``cache_dir``)."""
    from catdog_lightning.data.sharding import shard_folder

    start = time.perf_counter()
    shard_folder(data_dir, cache_dir)
    return {"seconds": time.perf_counter() - start, "disk_mb": folder_mb(cache_dir), "photos_mb": folder_mb(data_dir)}


def phase_disk(cache_dir: str, **_) -> dict:
    return {"disk_mb": folder_mb(cache_dir)}


PHASES = {
    "shard_write": phase_shard_write,
    "disk": phase_disk,
    "lesson": phase_lesson,
    "floor": phase_floor,
    "cache_build": phase_cache_build,
    "project": phase_project,
    "cnn_floor": phase_cnn_floor,
    "backbone": phase_backbone,
}


def main(argv: list[str] | None = None) -> int:
    """One phase, in the fresh process :func:`run_phase` starts (an internal entry point, not a user's)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phase", choices=sorted(PHASES))
    parser.add_argument("--data_dir")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cache_dir")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--what", default="features")
    parser.add_argument("--data_size", type=int, default=0)
    args = vars(parser.parse_args(argv))
    result = PHASES[args.pop("phase")](**args)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
