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
from pathlib import Path

from catdog_lightning.errors import ConfigError, DataError, UserError

from .plot import plot
from .rows import ROWS, ROWS_BY_KEY, Row, current_runs

# The project folder: the runs start its scripts/train.py and friends, and the table lives in its docs/.
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE = ROOT / "docs" / "results.json"
DEFAULT_TABLE = ROOT / "docs" / "RESULTS.md"
CLASSES_TABLE = ROOT / "docs" / "your-classes.json"  # written by scripts/your_classes.py
DEFAULT_PLOT = ROOT / "docs" / "results.png"


def measure(row: Row, seed: int, data_dir: str, logs_dir: str | os.PathLike, python: str = sys.executable) -> dict:
    """Run one (row, seed) in a fresh process under ``logs_dir``; its test accuracy and wall time."""
    run_name = f"{row.key}-seed{seed}"
    run_dir = Path(logs_dir) / run_name
    shutil.rmtree(run_dir, ignore_errors=True)  # a measurement killed earlier: start it afresh
    argv = [*row.command(data_dir, seed), *row.extra, "--logs_dir", str(logs_dir), "--run_name", run_name]
    start = time.perf_counter()
    if not (ROOT / argv[0]).is_file():
        raise ConfigError(f"{ROOT / argv[0]} not found: results.py runs from a checkout of the project.")
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
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


def machine() -> dict:
    """What a run is measured on; stored with each run, since a table grows a row at a time, on several machines."""
    import torch

    from catdog_lightning.hardware import cpu_description

    return {
        "cpu": cpu_description(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def described(m: dict) -> str:
    cpu = m.get("cpu") or f"{m.get('cpus', '?')} CPU cores ({m.get('processor', '?')})"
    return f"{cpu}, torch {m.get('torch', '?')}, Python {m.get('python', '?')}"


def machines_line(measured: dict[str, list[dict]]) -> str:
    """Which machine measured which rows, and when: ``measured`` maps a row's title to its runs."""
    groups: dict[str, tuple[dict[str, None], set[str]]] = {}  # machine -> (titles in order, dates)
    for title, runs in measured.items():
        for run in runs:
            titles, dates = groups.setdefault(described(run.get("machine") or {}), ({}, set()))
            titles[title] = None
            dates.update(filter(None, [run.get("date")]))
    parts = []
    for i, (machine_text, (titles, dates)) in enumerate(sorted(groups.items(), key=lambda g: len(g[1][0]))):
        last = i == len(groups) - 1
        which = "every row" if len(groups) == 1 else "the other rows" if last else ", ".join(titles)
        days = sorted(dates)
        when = f" ({days[0]}{f' to {days[-1]}' if len(days) > 1 else ''})" if days else ""
        parts.append(f"{machine_text}: {which}{when}")
    return "Measured one run at a time, no GPU, on " + "; on ".join(parts) + "."


def summarise(accs: list[float]) -> dict:
    return {
        "mean": statistics.mean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "min": min(accs),
        "max": max(accs),
    }


def _command_line(row: Row) -> str:
    return "`python " + row.shown().replace("DATA", "../shared/data/catdog-a") + "`"


def render(store: dict) -> str:
    """The Markdown of docs/RESULTS.md from the stored measurements."""
    lines = [
        "# Results on real photos",
        "",
        "Test accuracy on `catdog-a` (Kaggle Dogs vs Cats: 2,000 train / 1,000 test photos; 64x64 for the MLPs,",
        "96x96 for the CNNs trained from scratch, 224x224 from ImageNet weights),",
        "each row run once per seed `S` in a fresh process by `python scripts/results.py`, which also wrote this",
        "file. Accuracy is the mean over seeds, ± the sample standard deviation, with the range; wall time is the",
        "median per run, start of the process to its end (Python start-up and data loading included); training",
        "time is the median of the training loop alone, as the run itself measured it.",
        "",
        "| Model | Test accuracy | Range | Seeds | Epochs | Wall time / run | Training time / run | Command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes, measured = [], {}
    for row in ROWS:
        runs = current_runs(store, row)
        if not runs:
            continue
        measured[row.title] = list(runs.values())
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
    lines += [
        "",
        *notes,
        "",
        machines_line(measured) + " The bf16 rows and "
        "the pretrained recipes' frozen pass (precision auto) compute in bf16 only on a CPU with AVX512-BF16 or "
        "AMX; elsewhere they run in fp32 (times on such a CPU: docs/performance.md#precision-on-every-cpu). "
        "Per-run numbers: `docs/results.json`.",
        "",
    ]
    if CLASSES_TABLE.is_file():  # the many-classes path, measured by scripts/your_classes.py
        classes = json.loads(CLASSES_TABLE.read_text())
        lines += [f"## Your classes: {classes['data']}", "", classes["table"], "",
                  "More on training your own classes: [your-classes.md](your-classes.md).", ""]  # fmt: skip
    return "\n".join(lines)


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
        here = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
        for key in rows:
            row = ROWS_BY_KEY[key]
            done = store["runs"].setdefault(key, {})
            for seed in args["seeds"]:
                if str(seed) in current_runs(store, row) and not args.get("redo"):
                    continue
                print(f"{key} seed {seed}: {shlex.join(row.command(str(data_dir), seed))}", flush=True)
                record = measure(row, seed, str(data_dir), args["logs_dir"])
                print(f"  test acc {record['test_acc']:.4f}, {record['wall_s']:.0f} s", flush=True)
                done[str(seed)] = {**record, **here}
                store_path.parent.mkdir(parents=True, exist_ok=True)
                store_path.write_text(json.dumps(store, indent=2) + "\n")  # after each run: nothing lost
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table_path.write_text(render(store))
    print(f"wrote {table_path}")
    plot_path = Path(args.get("plot") or DEFAULT_PLOT)
    plot(store).save(plot_path)
    print(f"wrote {plot_path}")
