"""Side-by-side timing of the lesson's data pipeline, this project's, and the bare compute floor.

Three parts, each timed side by side in one run: the lesson's MLP (the lesson's loop, the project, a bare
loop), the CNN recipe (``configs/cnn-fast.yaml``) in fp32 and bf16 against a bare loop of the same model,
precision and work, and the CNN in bf16 under other thread and DataLoader-worker settings. Each
measurement is a phase (:mod:`.phases`) in its own fresh Python process; :mod:`.tables` gathers them into
one table of medians and ratios. It reports; it does not assert.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from catdog_lightning.errors import ConfigError, DataError

from .tables import format_table, summarise

PARTS = ("mlp", "cnn", "threads", "backbones", "shards")
ALL_PARTS = (*PARTS, "inference")  # inference times a trained checkpoint: asked for by name
CHECKOUT = Path(__file__).resolve().parents[2]
# The pretrained recipes' backbones at their sizes, timed in fp32 and bf16.
BACKBONE_SETTINGS = (("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260))
# (intra-op threads, DataLoader workers) tried for the CNN in bf16; threads 0 is torch's default (one per core).
THREAD_SETTINGS = ((0, 0), (1, 0), (0, 1), (0, 2))
# Image sizes the decode cache and the shards are timed at (the MLP), and the loader workers streaming tries.
SHARD_SIZES, STREAM_WORKERS = (64, 160), (0, 2)


def run_phase(name: str, **kwargs) -> dict:
    """One phase in a fresh interpreter; its last stdout line is the JSON result."""
    args = [sys.executable, "-m", "lab.benchmark.phases", "--phase", name]
    for key, value in kwargs.items():
        args += [f"--{key}", str(value)]
    path = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))  # the lab is the checkout's
    out = subprocess.run(args, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": path})
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
        if "backbones" in parts:
            results["backbones"] = [
                {
                    "arch": arch,
                    "image_size": size,
                    "what": what,
                    **{
                        precision: run_phase("backbone", arch=arch, image_size=size, precision=precision, what=what)
                        for precision in ("32-true", "bf16-mixed")
                    },
                }
                for arch, size in BACKBONE_SETTINGS
                for what in ("features", "step")
            ]
        if "shards" in parts:
            results["shards"] = _shards(data_dir, epochs, Path(tmp))
    return summarise(results)


def _shards(data_dir: str, epochs: int, tmp: Path) -> dict:
    """The MLP from the decode cache (its second run) and from shards (photos decoded every epoch), per size."""
    shards = str(tmp / "shards")
    result: dict = {"write": run_phase("shard_write", data_dir=data_dir, cache_dir=shards), "sizes": []}
    for size in SHARD_SIZES:
        cache = str(tmp / f"shards-cache-{size}")
        run_phase("project", data_dir=data_dir, epochs=2, cache_dir=cache, data_size=size)  # builds the cache
        row = {
            "image_size": size,
            "cached": run_phase("project", data_dir=data_dir, epochs=epochs, cache_dir=cache, data_size=size),
            "cache_mb": run_phase("disk", cache_dir=cache)["disk_mb"],
        }
        for workers in STREAM_WORKERS:
            row[f"streamed_{workers}"] = run_phase(
                "project", data_dir=shards, epochs=epochs, cache_dir=cache, data_size=size, workers=workers
            )
        result["sizes"].append(row)
    return result


def run_benchmark_cli(args: dict) -> None:
    """scripts/benchmark.py: time the pipelines on ``--data_dir`` (default: the built-in data), print the table."""
    from catdog_lightning.data import ensure_builtin_dataset

    if args["epochs"] < 2:
        raise ConfigError("--epochs must be at least 2 (the first epoch is not a steady one).")
    parts = tuple(args.get("parts") or PARTS)
    unknown = sorted(set(parts) - set(ALL_PARTS))
    if unknown:
        raise ConfigError(f"--parts takes some of {', '.join(ALL_PARTS)}; {', '.join(unknown)} is not one.")
    if "inference" in parts:
        from catdog_lightning.inference.locate import checkpoint_or_latest

        from .inference import format_inference, run_inference_benchmark

        ckpt = checkpoint_or_latest(args.get("ckpt_path"))
        result = run_inference_benchmark(ckpt)
        print(json.dumps(result, indent=2) if args.get("json") else format_inference(result))
        parts = tuple(p for p in parts if p != "inference")
        if not parts:
            return
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
