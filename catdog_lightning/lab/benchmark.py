"""Side-by-side timing of the lesson's data pipeline, this project's, and the bare compute floor.

Each measurement runs in its own fresh Python process (so imports, page cache of our own tensors
and peak RSS do not leak between them) and reports JSON; :func:`run_benchmark` gathers them into
one table of medians and ratios. It reports; it does not assert.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from ..data import CatDogDataModule, scan_folder
from ..data.cache import load_or_decode
from ..errors import ConfigError, DataError
from ..models import MLP
from .lesson import BATCH, IMAGE_SIZE, LessonDataset, fit_epochs


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
        self._epoch = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.train_epoch_s.append(time.perf_counter() - self._epoch)


def phase_project(data_dir: str, epochs: int, cache_dir: str, **_) -> dict:
    from ..training import train

    logs = tempfile.mkdtemp(prefix="catdog-bench-logs-")
    config = {
        "data": {"data_dir": data_dir, "image_size": IMAGE_SIZE, "batch_size": BATCH, "cache_dir": cache_dir},
        "trainer": {
            "max_epochs": epochs,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "logs_dir": logs,
    }
    start = time.perf_counter()
    timer = _EpochTimer(start)
    train(config, callbacks=[timer])
    total = time.perf_counter() - start
    return {"epoch_s": timer.train_epoch_s, "first_step_s": timer.first_step_s, "total_s": total}


PHASES = {"lesson": phase_lesson, "floor": phase_floor, "cache_build": phase_cache_build, "project": phase_project}


def _run_phase(name: str, **kwargs) -> dict:
    """One phase in a fresh interpreter; its last stdout line is the JSON result."""
    args = [sys.executable, "-m", "catdog_lightning.lab.benchmark", "--phase", name]
    for key, value in kwargs.items():
        args += [f"--{key}", str(value)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_benchmark(data_dir: str, epochs: int = 5) -> dict:
    with tempfile.TemporaryDirectory(prefix="catdog-bench-cache-") as tmp:
        cold, warm = str(Path(tmp) / "cold"), str(Path(tmp) / "warm")
        results = {
            "data_dir": str(data_dir),
            "epochs": epochs,
            "cache_build": _run_phase("cache_build", data_dir=data_dir, cache_dir=str(Path(tmp) / "build")),
            "lesson": _run_phase("lesson", data_dir=data_dir, epochs=epochs),
            "project_cold": _run_phase("project", data_dir=data_dir, epochs=epochs, cache_dir=cold),
            "project_warm": _run_phase("project", data_dir=data_dir, epochs=epochs, cache_dir=cold),
            "floor": _run_phase("floor", data_dir=data_dir, epochs=epochs, cache_dir=warm),
        }
    return summarise(results)


def summarise(r: dict) -> dict:
    lesson, cold, warm, floor = r["lesson"], r["project_cold"], r["project_warm"], r["floor"]
    n_lesson, n_train = lesson["images"], floor["images"]
    steady = statistics.median(cold["epoch_s"][1:] + warm["epoch_s"][1:])
    per_image = {
        "lesson": statistics.median(lesson["epoch_s"]) / n_lesson,
        "project": steady / n_train,
        "floor": statistics.median(floor["epoch_s"]) / n_train,
    }
    r["ratios"] = {
        "lesson_over_project": per_image["lesson"] / per_image["project"],
        "project_over_floor": per_image["project"] / per_image["floor"],
        "lesson_epoch_over_cache_build": statistics.median(lesson["epoch_s"]) / r["cache_build"]["seconds"],
        "warm_over_cold_first_step": warm["first_step_s"] / cold["first_step_s"],
    }
    r["images_per_s"] = {k: 1 / v for k, v in per_image.items()}
    r["project_steady_epoch_s"] = steady
    return r


def format_table(r: dict) -> str:
    lesson, cold, warm, floor, ratios = r["lesson"], r["project_cold"], r["project_warm"], r["floor"], r["ratios"]
    med = statistics.median
    rows = [
        (
            "1. lesson as written: PIL every epoch, plain Adam",
            f"{med(lesson['epoch_s']):.3f}",
            "-",
            f"{r['images_per_s']['lesson']:.0f}",
            f"{lesson['peak_rss_mb']:.0f}",
        ),
        (
            "2. project, first run (builds cache)",
            f"{cold['epoch_s'][0]:.3f}",
            f"{cold['first_step_s']:.2f}",
            f"{r['images_per_s']['project']:.0f}",
            f"{cold['peak_rss_mb']:.0f}",
        ),
        (
            "2. project, second run (cache hit)",
            f"{med(warm['epoch_s'][1:]):.3f}",
            f"{warm['first_step_s']:.2f}",
            "",
            f"{warm['peak_rss_mb']:.0f}",
        ),
        (
            "3. floor: bare loop, tensor in memory, fused Adam",
            f"{med(floor['epoch_s']):.3f}",
            "-",
            f"{r['images_per_s']['floor']:.0f}",
            f"{floor['peak_rss_mb']:.0f}",
        ),
    ]
    head = ("pipeline", "epoch s (median)", "to 1st step s", "images/s", "peak RSS MB")
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(5)]
    line = lambda row: "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"  # noqa: E731
    out = [
        f"Benchmark on {r['data_dir']} ({lesson['images']} train images for the lesson, {floor['images']} after the "
        f"val split for the project and floor; {r['epochs']} epochs each; 2. and 3. are median over epochs 2+)",
        line(head),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *map(line, rows),
        "",
        f"cache build: {r['cache_build']['seconds']:.2f} s for {r['cache_build']['images']} images "
        f"({r['cache_build']['tensor_mb']:.1f} MB uint8 tensor)",
        f"ratio 1/2 (lesson / project, per image):        {ratios['lesson_over_project']:.1f}x   (target >= 10x)",
        f"ratio 2/3 (project / floor, per image):         {ratios['project_over_floor']:.2f}x  (target <= 1.3x)",
        f"lesson epoch / cache build:                     {ratios['lesson_epoch_over_cache_build']:.1f}x   "
        "(target >= 2x)",
        f"second run / first run, start to first step:    {ratios['warm_over_cold_first_step']:.2f}   (target < 0.2)",
        f"peak RSS of the project vs tensor + 1 GiB:      {max(cold['peak_rss_mb'], warm['peak_rss_mb']):.0f} MB vs "
        f"{r['cache_build']['tensor_mb'] + 1024:.0f} MB",
    ]
    return "\n".join(out)


def run_benchmark_cli(args: dict) -> None:
    """scripts/benchmark.py: time the pipelines on ``--data_dir`` (default: the built-in data), print the table."""
    from ..data import ensure_builtin_dataset

    if args["epochs"] < 2:
        raise ConfigError("--epochs must be at least 2 (the first epoch is not a steady one).")
    data_dir = args.get("data_dir") or str(ensure_builtin_dataset())
    if not (Path(data_dir) / "train").is_dir():
        raise DataError(f"--data_dir {data_dir} has no train/ folder.")
    result = run_benchmark(data_dir, args["epochs"])
    print(json.dumps(result, indent=2) if args.get("json") else format_table(result))


def main(argv: list[str] | None = None) -> int:
    """One phase, in the fresh process :func:`_run_phase` starts (an internal entry point, not a user's)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phase", choices=sorted(PHASES))
    parser.add_argument("--data_dir")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cache_dir")
    args = parser.parse_args(argv)
    result = PHASES[args.phase](data_dir=args.data_dir, epochs=args.epochs, cache_dir=args.cache_dir)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
