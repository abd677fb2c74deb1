"""Side-by-side timing of the lesson's data pipeline, this project's, and the bare compute floor.

Three parts, each timed side by side in one run: the lesson's MLP (the lesson's loop, the project, a bare
loop), the CNN recipe (``configs/cnn-fast.yaml``) in fp32 and bf16 against a bare loop of the same model,
precision and work, and the CNN in bf16 under other thread and DataLoader-worker settings. Each
measurement runs in its own fresh Python process (so imports, page cache of our own tensors and peak RSS
do not leak between them) and reports JSON; :func:`run_benchmark` gathers them into one table of medians
and ratios. It reports; it does not assert.
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
from ..data.augment import flip_and_crop
from ..data.cache import load_or_decode
from ..errors import ConfigError, DataError
from ..models import MLP, schedules
from ..models.cnn import SmallCNN
from ..models.layers import Standardize, average_views, zoom_margin
from .lesson import BATCH, IMAGE_SIZE, LessonDataset, fit_epochs

# The CNN recipe the CNN rows time: the project runs it as a user would, the bare loop does the same work.
CNN_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "cnn-fast.yaml"
PARTS = ("mlp", "cnn", "threads")
# (intra-op threads, DataLoader workers) tried for the CNN in bf16; threads 0 is torch's default (one per core).
THREAD_SETTINGS = ((0, 0), (1, 0), (0, 1), (0, 2))


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
    from ..cli import parse_flags

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
    **_,
) -> dict:
    """``scripts/train.py`` as a user runs it (the default MLP, or the CNN recipe), timed per epoch."""
    from ..training import train

    if threads:
        torch.set_num_threads(threads)
    config = _cnn_recipe(precision) if model == "cnn" else {"data": {"image_size": IMAGE_SIZE, "batch_size": BATCH}}
    config["data"].update(data_dir=data_dir, cache_dir=cache_dir, num_workers=workers)
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
    net = SmallCNN(hp["channels"], hp["dropout"], hp["convs_per_block"]).to(device)
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


PHASES = {
    "lesson": phase_lesson,
    "floor": phase_floor,
    "cache_build": phase_cache_build,
    "project": phase_project,
    "cnn_floor": phase_cnn_floor,
}


def run_phase(name: str, **kwargs) -> dict:
    """One phase in a fresh interpreter; its last stdout line is the JSON result."""
    args = [sys.executable, "-m", "catdog_lightning.lab.benchmark", "--phase", name]
    for key, value in kwargs.items():
        args += [f"--{key}", str(value)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_benchmark(data_dir: str, epochs: int = 5, parts=PARTS, accelerator: str = "cpu") -> dict:
    results: dict = {"data_dir": str(data_dir), "epochs": epochs, "accelerator": accelerator}
    with tempfile.TemporaryDirectory(prefix="catdog-bench-cache-") as tmp:
        cold, warm = str(Path(tmp) / "cold"), str(Path(tmp) / "warm")
        common = {"data_dir": data_dir, "epochs": epochs, "accelerator": accelerator}
        if "mlp" in parts:
            results |= {
                "cache_build": run_phase("cache_build", data_dir=data_dir, cache_dir=str(Path(tmp) / "build")),
                "lesson": run_phase("lesson", data_dir=data_dir, epochs=epochs),
                "project_cold": run_phase("project", **common, cache_dir=cold),
                "project_warm": run_phase("project", **common, cache_dir=cold),
                "floor": run_phase("floor", data_dir=data_dir, epochs=epochs, cache_dir=warm),
            }
        cnn = {**common, "cache_dir": str(Path(tmp) / "cnn")}
        if "cnn" in parts:
            results["cnn"] = {
                precision: {
                    "project": run_phase("project", **cnn, model="cnn", precision=precision),
                    "floor": run_phase("cnn_floor", **cnn, precision=precision),
                }
                for precision in ("32-true", "bf16-mixed")
            }
        if "threads" in parts:
            results["threads"] = [
                {
                    "threads": threads or torch.get_num_threads(),
                    "workers": workers,
                    "project": run_phase(
                        "project", **cnn, model="cnn", precision="bf16-mixed", threads=threads, workers=workers
                    ),
                }
                for threads, workers in THREAD_SETTINGS
            ]
    return summarise(results)


def steady_epoch(run: dict) -> float:
    """Median epoch time after the first (which pays for warm-up: allocations, oneDNN's kernel choice)."""
    return statistics.median(run["epoch_s"][1:])


def summarise(r: dict) -> dict:
    for runs in r.get("cnn", {}).values():
        n = runs["floor"]["images"]
        project, floor = steady_epoch(runs["project"]), steady_epoch(runs["floor"])
        runs["summary"] = {"project_epoch_s": project, "floor_epoch_s": floor, "images_per_s": n / project}
        runs["summary"]["project_over_floor"] = project / floor
    if "cnn" in r:
        fp32, bf16 = (r["cnn"][p]["summary"]["project_epoch_s"] for p in ("32-true", "bf16-mixed"))
        r["cnn_bf16_speedup"] = fp32 / bf16
    for setting in r.get("threads", []):
        setting["epoch_s"] = steady_epoch(setting["project"])
    if "lesson" not in r:
        return r
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


def markdown_table(head: tuple, rows: list[tuple]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    line = lambda row: "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"  # noqa: E731
    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def format_table(r: dict) -> str:
    parts = [_mlp_table(r) if "lesson" in r else "", _cnn_table(r) if "cnn" in r else ""]
    parts.append(_threads_table(r) if "threads" in r else "")
    return "\n\n".join(p for p in parts if p)


def _cnn_table(r: dict) -> str:
    rows = []
    for precision, runs in r["cnn"].items():
        summary = runs["summary"]
        rows.append(
            (
                precision,
                f"{summary['project_epoch_s']:.2f}",
                f"{summary['floor_epoch_s']:.2f}",
                f"{summary['project_over_floor']:.2f}x",
                f"{summary['images_per_s']:.0f}",
                f"{runs['project']['peak_rss_mb']:.0f}",
                f"{runs['floor']['peak_rss_mb']:.0f}",
            )
        )
    head = ("precision", "project epoch s", "bare loop epoch s", "project / bare", "images/s", "RSS MB", "bare RSS MB")
    floor = r["cnn"]["32-true"]["floor"]
    return "\n".join(
        [
            f"CNN recipe (configs/cnn-fast.yaml) on {r['accelerator']}, {floor['images']} train images at "
            f"{floor['image_size']} px; median epoch (training and validation) over epochs 2-{r['epochs']}; the bare "
            "loop does the same work (network, precision, augmentation, AdamW + one-cycle, validation with its looks) "
            "without Lightning, on tensors held on the device",
            *markdown_table(head, rows),
            "",
            f"bf16-mixed vs 32-true, project epoch: {r['cnn_bf16_speedup']:.2f}x faster; "
            "target project / bare <= 1.15x",
        ]
    )


def _threads_table(r: dict) -> str:
    fastest = min(s["epoch_s"] for s in r["threads"])
    rows = [
        (
            s["threads"],
            s["workers"],
            f"{s['epoch_s']:.2f}",
            f"{s['epoch_s'] / fastest:.2f}x",
            f"{s['project']['peak_rss_mb']:.0f}",
        )
        for s in r["threads"]
    ]
    head = ("intra-op threads", "DataLoader workers", "project epoch s", "vs fastest", "peak RSS MB")
    return "\n".join(
        ["CNN recipe in bf16-mixed, threads and workers (first row: the defaults)", *markdown_table(head, rows)]
    )


def _mlp_table(r: dict) -> str:
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
    out = [
        f"Benchmark on {r['data_dir']} ({lesson['images']} train images for the lesson, {floor['images']} after the "
        f"val split for the project and floor; {r['epochs']} epochs each; 2. and 3. are median over epochs 2+)",
        *markdown_table(head, rows),
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
    parts = tuple(args.get("parts") or PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ConfigError(f"--parts takes some of {', '.join(PARTS)}; {', '.join(unknown)} is not one.")
    accelerator = args.get("accelerator") or "cpu"
    if accelerator not in ("cpu", "gpu"):
        raise ConfigError(f"--accelerator must be cpu or gpu, got {accelerator!r}.")
    if accelerator == "gpu" and parts != ("cnn",):  # the lesson and the thread settings are CPU matters
        raise ConfigError("--accelerator gpu times the CNN alone: add --parts [cnn].")
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("--accelerator gpu: no CUDA GPU is visible to torch here; leave it out to time the CPU.")
    data_dir = args.get("data_dir") or str(ensure_builtin_dataset())
    if not (Path(data_dir) / "train").is_dir():
        raise DataError(f"--data_dir {data_dir} has no train/ folder.")
    result = run_benchmark(data_dir, args["epochs"], parts, accelerator)
    print(json.dumps(result, indent=2) if args.get("json") else format_table(result))


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
    args = vars(parser.parse_args(argv))
    result = PHASES[args.pop("phase")](**args)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
