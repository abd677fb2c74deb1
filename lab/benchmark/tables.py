"""The benchmark's tables: medians and ratios of what the phases measured, as Markdown."""

from __future__ import annotations

import statistics


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
    parts.append(_backbones_table(r) if "backbones" in r else "")
    parts.append(_shards_table(r) if "shards" in r else "")
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


def _backbones_table(r: dict) -> str:
    rows = []
    for b in r["backbones"]:
        fp32, bf16 = b["32-true"]["images_per_s"], b["bf16-mixed"]["images_per_s"]
        what = "features (no_grad, batch 4)" if b["what"] == "features" else "training step (batch 16)"
        rows.append((b["arch"], b["image_size"], what, f"{fp32:.1f}", f"{bf16:.1f}", f"{bf16 / fp32:.2f}x"))
    head = ("backbone", "px", "what", "fp32 images/s", "bf16 images/s", "bf16 / fp32")
    title = "Pretrained backbones at their recipes' sizes, fp32 against bf16 autocast"
    return "\n".join([title, *markdown_table(head, rows)])


def _shards_table(r: dict) -> str:
    write, rows = r["shards"]["write"], []
    for row in r["shards"]["sizes"]:
        cached = steady_epoch(row["cached"])
        streams = {key: steady_epoch(run) for key, run in row.items() if key.startswith("streamed_")}
        size, rss = row["image_size"], row["cached"]["peak_rss_mb"]
        rows.append((f"{size} px, decode cache", f"{cached:.3f}", "1.00", f"{row['cache_mb']:.0f}", f"{rss:.0f}"))
        for key, seconds in streams.items():
            what = f"{size} px, shards, {key.removeprefix('streamed_')} loader workers"
            rss = row[key]["peak_rss_mb"]
            rows.append((what, f"{seconds:.3f}", f"{seconds / cached:.2f}", f"{write['disk_mb']:.0f}", f"{rss:.0f}"))
    head = ("MLP trained from", "epoch s (median)", "x the cache's", "disk MB", "peak RSS MB")
    note = (
        f"Shards: written in {write['seconds']:.1f} s, {write['disk_mb']:.0f} MB (the photos: "
        f"{write['photos_mb']:.0f} MB); the decode cache holds 3 x size^2 bytes a photo. Median epoch over epochs "
        f"2-{r['epochs']}; the main process's peak RSS (loader workers' own memory not counted)."
    )
    return "\n".join([*markdown_table(head, rows), "", note])
