"""The many-classes table of docs/your-classes.md: the pretrained recipes, unchanged but for --data.data_dir, on a
folder of class folders (clothing-10), each seed in a fresh process, one at a time; accuracy, macro F1, the three
most confused pairs (evaluate.py's report) and minutes.

    python scripts/your_classes.py --data_dir ../shared/data/clothing-10
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from catdog_lightning.errors import ConfigError

from .results import machine, machines_line

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "probe": "Lite1 linear probe, 240 px (`configs/probe.yaml`)",
    "probe-joined": "Lite1 + Lite2 joined probe, 260 px (`configs/probe-joined.yaml`)",
    "finetune": "Lite1 probe, then its top blocks fine-tuned (`configs/finetune.yaml`)",
}


def measure(recipe: str, seed: int, data_dir: str, logs_dir: Path) -> dict:
    """One recipe and seed in a fresh process (photos decoded and features computed afresh: ``--data.cache
    false``), then evaluate.py on its tested checkpoint for the confused pairs."""
    name = f"{recipe}-seed{seed}"
    argv = [sys.executable, "scripts/train.py", "--data.data_dir", data_dir, "--config", f"configs/{recipe}.yaml",
            "--data.cache", "false", "--seed_everything", str(seed), "--logs_dir", str(logs_dir), "--run_name", name,
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (logs_dir / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise ConfigError(f"{name} exited with {done.returncode}; see {logs_dir / f'{name}.log'}")
    (logs_dir / name / "wall_seconds").write_text(f"{seconds:.1f}\n")
    metrics = json.loads((logs_dir / name / "metrics.json").read_text())
    evaluated = subprocess.run([sys.executable, "scripts/evaluate.py", "--ckpt_path", metrics["tested_checkpoint"],
                                "--report", str(logs_dir / f"{name}.evaluation.json")], cwd=ROOT, capture_output=True,
                               text=True)  # fmt: skip
    if evaluated.returncode != 0:
        raise ConfigError(f"evaluate.py on {name} exited with {evaluated.returncode}: {evaluated.stderr[-300:]}")
    return collect(recipe, seed, logs_dir)


def collect(recipe: str, seed: int, logs_dir: Path) -> dict:
    """A measured run's row: the run's own test accuracy and macro F1 (metrics.json), its wall minutes, and the
    pairs evaluate.py found most confused."""
    name = f"{recipe}-seed{seed}"
    metrics = json.loads((logs_dir / name / "metrics.json").read_text())
    scored = json.loads((logs_dir / f"{name}.evaluation.json").read_text())
    minutes = float((logs_dir / name / "wall_seconds").read_text()) / 60
    return {"acc": metrics["test/acc"], "f1": metrics["test/f1"], "minutes": minutes,
            "confused": scored["most_confused"]}  # fmt: skip


def table(results: dict[str, list[dict]], data_dir: str) -> str:
    lines = ["| Recipe | Test accuracy | Macro F1 | Most confused (mistakes, all seeds) | Minutes / run | Seeds |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for recipe, runs in results.items():
        accs, f1s = [r["acc"] for r in runs], [r["f1"] for r in runs]
        spread = lambda xs: f" ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else ""  # noqa: E731
        pairs = Counter()
        for r in runs:
            for p in r["confused"]:
                pairs["/".join(p["classes"])] += p["mistakes"]
        shown = ", ".join(f"{pair} {n}" for pair, n in pairs.most_common(3))
        minutes = statistics.median(r["minutes"] for r in runs)
        lines.append(f"| {RECIPES[recipe]} | **{100 * statistics.mean(accs):.1f}%**{spread(accs)} | "
                     f"{statistics.mean(f1s):.3f} | {shown} | {minutes:.1f} | {len(runs)} |")  # fmt: skip
    command = f"python scripts/train.py --data.data_dir {data_dir} --config configs/RECIPE.yaml --seed_everything S"
    return "\n".join(lines + ["", f"Each run: `{command}` (with `--data.cache false`: every seed decodes and computes "
                              "its features afresh, inside its minutes).", "",
                              machines_line({RECIPES[recipe]: runs for recipe, runs in results.items()})])  # fmt: skip


def run(args: dict) -> None:
    data_dir, logs_dir = args["data_dir"], Path(args["logs_dir"])
    if not (Path(data_dir) / "train").is_dir():
        raise ConfigError(f"--data_dir {data_dir} has no train/ folder of class folders.")
    logs_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    here = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}  # --collect_only: runs this machine made
    for recipe in args["recipes"]:
        if recipe not in RECIPES:
            raise ConfigError(f"--recipes: {recipe} is not one of {', '.join(RECIPES)}.")
        for seed in args["seeds"]:
            done = args.get("collect_only")
            row = collect(recipe, seed, logs_dir) if done else measure(recipe, seed, data_dir, logs_dir)
            results.setdefault(recipe, []).append({**row, **here})
            print(f"{recipe} seed {seed}: {row}", flush=True)
    docs, name = ROOT / "docs" / "your-classes.json", Path(data_dir).name
    if args.get("write_docs"):  # the recipes not measured now keep their rows (--recipes re-measures one alone)
        kept = json.loads(docs.read_text()) if docs.exists() else {}
        kept = kept.get("runs", {}) if kept.get("data") == name else {}
        results = {recipe: results.get(recipe) or kept[recipe] for recipe in RECIPES if recipe in {*results, *kept}}
    text = table(results, data_dir)
    (logs_dir / "table.md").write_text(text + "\n")
    if args.get("write_docs"):
        docs.write_text(json.dumps({"data": name, "table": text, "runs": results}, indent=2) + "\n")
    print(text)
