"""docs/results.png: test accuracy against training minutes, one point per row of the results table."""

from __future__ import annotations

import statistics

from .rows import ROWS, current_runs


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
    width, height, left, right, top, bottom = 900, 480, 70, 300, 40, 50
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
    # Labels in a column on the right, in the points' vertical order, pushed apart so none overlap.
    placed = sorted((xy(minutes, mean)[1], i) for i, (_, minutes, mean, _, _) in enumerate(points))
    label_y: dict[int, float] = {}
    previous = -1e9
    for y, i in placed:
        label_y[i] = previous = max(y - 6, previous + 14)
    for i, (title, minutes, mean, low, high) in enumerate(points):
        colour = (30, 90, 200) if "Pretrained" in title else (200, 80, 30)
        x, y = xy(minutes, mean)
        draw.line([x, xy(minutes, low)[1], x, xy(minutes, high)[1]], fill=colour, width=2)
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
        draw.line([x + 6, y, width - right + 8, label_y[i] + 6], fill=(190, 190, 190))
        draw.text((width - right + 12, label_y[i]), f"{title}: {mean:.1f}%", fill=colour, font=font)
    return img
