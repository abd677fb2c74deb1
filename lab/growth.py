"""How the pipeline's costs grow with the folder: the built-in generator's pictures at 2k, 10k and 25k (and,
given ``--data_dir``, a real folder beside them).

For each folder, two fresh processes (benchmark.py's phases): the cache build (scan, decode, write) and a
second, cached run of the default ``scripts/train.py`` (time to its first step, epoch time, peak RSS); every
folder twice, in two rounds, keeping each cost's lower reading. Each cost is reported per size, with its
growth exponent from each smaller generated folder to the largest: 1.0 is linear, below 1 grows slower.
Results go to ``docs/growth.json`` and ``docs/growth.png``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from catdog_lightning.data.synthetic import generate_dataset
from catdog_lightning.errors import ConfigError, DataError

from .benchmark import markdown_table, run_phase

ROOT = Path(__file__).resolve().parents[1]
SIZES = (2000, 10000, 25000)
TEST_IMAGES = 200  # each run still tests at its end: kept small, the growth is in train/
EPOCHS = 4
# A VM's speed drifts over minutes (docs/performance.md): every folder is measured in each of two rounds (the sizes
# in turn), and each cost is the lower of its two readings.
ROUNDS = 2
# (key, column title, unit) of each cost that must grow no faster than linearly
COSTS = (
    ("build_s", "cache build", "s"),
    ("start_s", "second run: start to 1st step", "s"),
    ("epoch_s", "epoch", "s"),
    ("peak_rss_mb", "peak RSS (training)", "MB"),
)


def make_folders(root: Path, sizes=SIZES) -> dict[int, Path]:
    """Generated folders of each size (train images; half cats), made once and reused.

    The largest is generated; the smaller ones are hard links to its first pictures of each class, so the
    sizes differ only in how many pictures there are.
    """
    biggest = max(sizes)
    full = root / f"generated-{biggest}"
    manifest = full / "manifest.json"
    wanted = {"n_train": biggest, "n_test": TEST_IMAGES}
    if not manifest.is_file() or any(json.loads(manifest.read_text()).get(k) != v for k, v in wanted.items()):
        print(f"Generating {biggest} + {TEST_IMAGES} pictures in {full}/ (once; a minute or two)...", flush=True)
        for old in root.glob("generated-*"):  # smaller folders link to the pictures being replaced
            shutil.rmtree(old)
        generate_dataset(full, biggest, TEST_IMAGES)
    folders = {}
    for n in sorted(sizes):
        folder = full if n == biggest else root / f"generated-{n}"
        if not folder.is_dir():
            staging = Path(tempfile.mkdtemp(dir=root, prefix=f".generated-{n}-"))
            for split, count in (("train", n), ("test", TEST_IMAGES)):
                for label in ("cat", "dog"):
                    (staging / split / label).mkdir(parents=True)
                    for src in sorted((full / split / label).iterdir())[: count // 2]:
                        _link_or_copy(src, staging / split / label / src.name)
            staging.rename(folder)
        folders[n] = folder
    return folders


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def measure(data_dir: Path) -> dict:
    """The costs for one folder, each from a fresh process."""
    with tempfile.TemporaryDirectory(prefix="catdog-growth-cache-") as cache:
        build = run_phase("cache_build", data_dir=data_dir, cache_dir=cache)
        run = run_phase("project", data_dir=data_dir, epochs=EPOCHS, cache_dir=cache)
    return {
        "images": build["images"],
        "build_s": build["seconds"],
        "build_peak_rss_mb": build["peak_rss_mb"],
        "start_s": run["first_step_s"],
        "epoch_s": statistics.median(run["epoch_s"][1:]),
        "peak_rss_mb": run["peak_rss_mb"],
    }


def lowest(readings: list[dict]) -> dict:
    """Each cost's lowest reading: interference and drift only ever add time."""
    return {key: min(r[key] for r in readings) for key in readings[0]}


def exponent(small: dict, large: dict, key: str) -> float:
    """k in cost ~ images^k between two measurements: 1 is linear growth."""
    return math.log(large[key] / small[key]) / math.log(large["images"] / small["images"])


def _costs_row(label: str, r: dict) -> tuple[str, ...]:
    return (
        label,
        f"{r['build_s']:.1f}",
        f"{r['build_peak_rss_mb']:.0f}",
        f"{r['start_s']:.2f}",
        f"{r['epoch_s']:.2f}",
        f"{r['peak_rss_mb']:.0f}",
    )


def format_growth(result: dict) -> str:
    generated = result["generated"]
    rows = [_costs_row(f"generated {r['images']:,}", r) for r in generated]
    if result.get("real"):
        r = result["real"]
        rows.append(_costs_row(f"{Path(result['real_dir']).name} {r['images']:,} (photos)", r))
    large = generated[-1]
    keys = ("build_s", "build_peak_rss_mb", "start_s", "epoch_s", "peak_rss_mb")
    for small in generated[:-1]:  # from each smaller folder to the largest: a step shows as a jump, a trend stays
        label = f"growth exponent {small['images']:,} -> {large['images']:,}"
        rows.append((label, *(f"{exponent(small, large, key):.2f}" for key in keys)))
    head = ("train images", "cache build s", "build peak RSS MB", "2nd run: to 1st step s", "epoch s", "train RSS MB")
    largest_start = large["start_s"]
    return "\n".join(
        [
            f"Growth of the default run (python scripts/train.py, MLP, 64 px) with the folder; epoch = median of "
            f"epochs 2-{EPOCHS} (training + validation of 10%)",
            *markdown_table(head, rows),
            "",
            "growth exponent: k in cost ~ images^k (1 = linear; target <= 1 for every cost)",
            f"second run's start at {large['images']:,} images: {largest_start:.2f} s (target < 1 s)",
        ]
    )


def plot_growth(result: dict):
    """Four panels (a PIL image): each cost against the number of train images, with the line through the
    origin and the smallest generated folder's cost, i.e. linear growth, drawn for comparison."""
    from PIL import Image, ImageDraw

    panel_w, panel_h, pad = 360, 240, 50
    img = Image.new("RGB", (2 * panel_w, 2 * panel_h), "white")
    draw = ImageDraw.Draw(img)
    generated = result["generated"]
    points = [(r, "steelblue") for r in generated] + ([(result["real"], "darkorange")] if result.get("real") else [])
    max_n = max(r["images"] for r, _ in points)
    for i, (key, title, unit) in enumerate(COSTS):
        ox, oy = (i % 2) * panel_w, (i // 2) * panel_h
        first = generated[0]
        linear = first[key] / first["images"] * max_n
        max_v = max([r[key] for r, _ in points] + [linear]) * 1.1
        to_xy = lambda n, v, ox=ox, oy=oy, max_v=max_v: (  # noqa: E731
            ox + pad + (panel_w - 1.5 * pad) * n / max_n,
            oy + panel_h - pad - (panel_h - 1.6 * pad) * v / max_v,
        )
        draw.line([to_xy(0, 0), to_xy(max_n, 0)], fill="black")
        draw.line([to_xy(0, 0), to_xy(0, max_v)], fill="black")
        draw.line([to_xy(0, 0), to_xy(max_n, linear)], fill="lightgray", width=1)
        draw.text((ox + pad, oy + 8), f"{title} ({unit})", fill="black")
        draw.text((ox + 4, to_xy(0, max_v)[1] - 6), f"{max_v:.3g}", fill="gray")
        draw.text((to_xy(max_n, 0)[0] - 85, oy + panel_h - pad + 6), f"{max_n:,} images", fill="gray")
        line = [to_xy(r["images"], r[key]) for r in generated]
        draw.line(line, fill="steelblue", width=2)
        for r, colour in points:
            x, y = to_xy(r["images"], r[key])
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
    draw.text((8, 2 * panel_h - 16), "blue: generated pictures; orange: real photos; gray: linear growth", fill="gray")
    return img


def run_growth(args: dict) -> dict:
    """scripts/growth.py: measure every size, print the table, write docs/growth.json and docs/growth.png."""
    sizes = tuple(sorted(int(n) for n in (args.get("sizes") or SIZES)))
    if len(sizes) < 2 or sizes[0] < 100:
        raise ConfigError(f"--sizes needs at least two sizes of 100 images or more, got {list(sizes)}.")
    real_dir = args.get("data_dir")
    if real_dir and not (Path(real_dir) / "train").is_dir():
        raise DataError(f"--data_dir {real_dir} has no train/ folder.")
    work = Path(args.get("work_dir") or ROOT / "data" / "growth")
    work.mkdir(parents=True, exist_ok=True)
    folders = make_folders(work, sizes)
    todo = {f"generated {n:,}": folder for n, folder in folders.items()}
    if real_dir:
        todo[real_dir] = Path(real_dir)
    rounds = []
    for i in range(ROUNDS):
        print(f"round {i + 1} of {ROUNDS}: {', '.join(todo)}", flush=True)
        rounds.append({name: measure(folder) for name, folder in todo.items()})
    best = {name: lowest([r[name] for r in rounds]) for name in todo}
    result: dict = {"generated": [best[f"generated {n:,}"] for n in folders], "real_dir": real_dir, "rounds": rounds}
    result["real"] = best[real_dir] if real_dir else None
    print(format_growth(result))
    out = Path(args.get("out_dir") or ROOT / "docs")
    out.mkdir(parents=True, exist_ok=True)
    (out / "growth.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_growth(result).save(out / "growth.png")
    print(f"wrote {out / 'growth.json'} and {out / 'growth.png'}")
    return result
