"""Drawing for people: captioned image grids and a confusion matrix as PIL images (for TensorBoard and reports)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GOOD, BAD = (30, 140, 60), (200, 40, 40)


def caption_grid(
    images: Sequence[np.ndarray], captions: Sequence[str], ok: Sequence[bool], columns: int = 8, tile: int = 96
) -> Image.Image:
    """Tiles of ``images`` (H x W x 3 uint8) with a caption strip under each, green when ``ok`` else red."""
    font = ImageFont.load_default()
    strip = 14
    rows = max(1, -(-len(images) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + strip)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (pixels, caption, good) in enumerate(zip(images, captions, ok, strict=True)):
        x, y = (i % columns) * tile, (i // columns) * (tile + strip)
        sheet.paste(Image.fromarray(pixels).resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        draw.rectangle([x, y + tile, x + tile - 1, y + tile + strip - 1], fill=GOOD if good else BAD)
        draw.text((x + 2, y + tile + 1), caption, fill=(255, 255, 255), font=font)
    return sheet


def confusion_matrix_image(
    matrix: Sequence[Sequence[int]], title: str = "", classes: Sequence[str] = ("dog", "cat")
) -> Image.Image:
    """A C x C confusion matrix (rows: true class, columns: predicted, in ``classes``' order), each cell shaded by
    its share of the row: the diagonal blue, mistakes red."""
    font = ImageFont.load_default()
    count = len(classes)
    cell = max(36, min(90, 640 // count))
    margin = 16 + 6 * max(len(name) for name in classes[:count]) + 40
    img = Image.new("RGB", (margin + count * cell + 10, margin + count * cell + 10), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((4, 4), f"{title}  (rows: true, columns: predicted)", fill=(0, 0, 0), font=font)
    for c, name in enumerate(classes):  # column heads, each on its own line so long names do not collide
        draw.text((margin + c * cell + 2, 20 + (c % 3) * 12), name[: cell // 6], fill=(0, 0, 0), font=font)
    for r, name in enumerate(classes):
        draw.text((4, margin + r * cell + cell // 2 - 6), name, fill=(0, 0, 0), font=font)
        total = max(1, sum(matrix[r]))
        for c in range(count):
            share = matrix[r][c] / total
            shade = int(255 - 170 * share)
            fill = (shade, shade, 255) if r == c else (255, shade, shade)
            box = [margin + c * cell, margin + r * cell, margin + (c + 1) * cell - 2, margin + (r + 1) * cell - 2]
            draw.rectangle(box, fill=fill)
            text = f"{matrix[r][c]}\n{share:.0%}" if cell >= 50 else f"{matrix[r][c]}"
            draw.text((box[0] + 4, box[1] + cell // 2 - 12), text, fill=(0, 0, 0), font=font)
    return img
