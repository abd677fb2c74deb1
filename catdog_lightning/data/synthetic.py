"""The built-in dataset: procedural cat and dog pictures, written as real JPEG files.

Nothing can be downloaded, so the project draws its own data. Cats have pointed ears, whiskers and
a small nose; dogs have floppy ears, a pale snout and a big dark nose. Fur and background colours,
size, position, tilt, clutter, blur and noise are random and shared by both classes, so only
shape tells them apart: learnable, but not trivially so for a pixel MLP.

Deterministic for a seed (each picture has its own generator), and written in the class-folder
layout real data uses: ``<root>/{train,test}/{cat,dog}/*.jpg``. For tests of your own classes,
:func:`generate_classes_dataset` draws N classes of shapes in the same layout.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .scan import CAT

GENERATOR_VERSION = 1
CANVAS = 128
JITTER = 14  # pixels the head centre may wander from the middle of the canvas
DEFAULT_BUILTIN_DIR = Path("data") / "builtin"


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


def _background(rng: np.random.Generator) -> Image.Image:
    top, bottom = np.array(_colour(rng)), np.array(_colour(rng))
    t = np.linspace(0, 1, CANVAS)[:, None, None]
    img = Image.fromarray((top * (1 - t) + bottom * t).repeat(CANVAS, axis=1).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(0, 4)):  # clutter, so the animal is not the only thing in view
        x, y = rng.integers(-20, CANVAS, size=2)
        w, h = rng.integers(10, 50, size=2)
        box = [int(x), int(y), int(x + w), int(y + h)]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=_colour(rng))
    return img


def _rotate(points: list[tuple[float, float]], centre: tuple[float, float], angle: float) -> list[tuple[float, float]]:
    cx, cy = centre
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _draw_animal(img: Image.Image, is_cat: bool, rng: np.random.Generator) -> None:
    draw = ImageDraw.Draw(img)
    r = float(rng.uniform(24, 34))
    cx, cy = (CANVAS / 2 + float(v) for v in rng.uniform(-JITTER, JITTER, size=2))
    tilt = float(rng.uniform(-0.25, 0.25))
    fur = _colour(rng, 30, 240)
    dark = _shade(fur, rng.uniform(0.35, 0.7))

    def poly(points: list[tuple[float, float]], fill: tuple[int, int, int]) -> None:
        draw.polygon(_rotate(points, (cx, cy), tilt), fill=fill)

    def blob(x: float, y: float, rx: float, ry: float, fill: tuple[int, int, int]) -> None:
        ((px, py),) = _rotate([(x, y)], (cx, cy), tilt)
        draw.ellipse([px - rx, py - ry, px + rx, py + ry], fill=fill)

    if is_cat:  # pointed ears standing up
        for side in (-1, 1):
            base = cx + side * r * rng.uniform(0.35, 0.6)
            poly(
                [
                    (base - 0.45 * r, cy - 0.55 * r),
                    (base + 0.45 * r, cy - 0.55 * r),
                    (base + side * 0.25 * r, cy - r * rng.uniform(1.35, 1.7)),
                ],
                dark,
            )
    else:  # floppy ears hanging beside the head
        for side in (-1, 1):
            blob(cx + side * r * 0.95, cy + r * 0.15, r * 0.32, r * rng.uniform(0.6, 0.85), dark)
    blob(cx, cy, r, r * rng.uniform(0.85, 1.0), fur)
    eye = _colour(rng, 0, 90)
    for side in (-1, 1):
        blob(cx + side * r * 0.38, cy - r * 0.2, r * 0.12, r * 0.12, eye)
    if is_cat:  # small pink nose and whiskers
        poly([(cx - 0.1 * r, cy + 0.15 * r), (cx + 0.1 * r, cy + 0.15 * r), (cx, cy + 0.28 * r)], (230, 120, 140))
        for side in (-1, 1):
            for dy in (-0.08, 0.08, 0.24):
                start = (cx + side * 0.2 * r, cy + 0.3 * r)
                end = (cx + side * 1.25 * r, cy + (0.3 + dy * 2) * r)
                draw.line(_rotate([start, end], (cx, cy), tilt), fill=_shade(fur, 0.25), width=1)
    else:  # pale snout with a big dark nose
        blob(cx, cy + r * 0.45, r * 0.42, r * 0.32, _shade(fur, 1.5))
        blob(cx, cy + r * 0.3, r * 0.16, r * 0.11, (25, 20, 20))


def draw_picture(is_cat: bool, rng: np.random.Generator) -> Image.Image:
    img = _background(rng)
    _draw_animal(img, is_cat, rng)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(4, 20), size=(CANVAS, CANVAS, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def draw_shape(label: int, classes: int, rng: np.random.Generator) -> Image.Image:
    """A picture of class ``label`` of ``classes`` for the many-classes path: one shape whose kind (ellipse,
    box, triangle, cross) and hue say the class, at a random size and place, over the cat/dog pictures'
    backgrounds, blur and noise."""
    img = _background(rng)
    draw = ImageDraw.Draw(img)
    hue = label / classes
    colour = tuple(int(255 * (0.5 + 0.5 * math.cos(2 * math.pi * (hue + k / 3)))) for k in range(3))
    r = float(rng.uniform(22, 34))
    cx, cy = (CANVAS / 2 + float(v) for v in rng.uniform(-JITTER, JITTER, size=2))
    kind = label % 4
    if kind == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == 1:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == 2:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
    else:
        draw.rectangle([cx - r, cy - r / 3, cx + r, cy + r / 3], fill=colour)
        draw.rectangle([cx - r / 3, cy - r, cx + r / 3, cy + r], fill=colour)
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(4, 12), size=(CANVAS, CANVAS, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def generate_classes_dataset(
    root: str | Path, classes: list[str], n_train: int = 20, n_test: int = 6, seed: int = 0, size: int = 48
) -> Path:
    """``root/{train,test}/<class>/*.jpg``: ``n_train`` and ``n_test`` pictures of each of ``classes`` (see
    :func:`draw_shape`), ``size`` pixels square. For tests and examples of your own classes."""
    root = Path(root)
    for split_id, (split, count) in enumerate((("train", n_train), ("test", n_test))):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, split_id, label, i])
                draw_shape(label, len(classes), rng).resize((size, size)).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def generate_dataset(root: str | Path, n_train: int = 1000, n_test: int = 200, seed: int = 0) -> Path:
    """Write ``n_train`` + ``n_test`` pictures (half cats) under ``root``, replacing it atomically."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        for split_id, (split, count) in enumerate((("train", n_train), ("test", n_test))):
            for i in range(count):
                rng = np.random.default_rng([seed, split_id, i])
                is_cat = i % 2 == 0
                name = "cat" if is_cat else "dog"
                folder = staging / split / name
                folder.mkdir(parents=True, exist_ok=True)
                quality = int(rng.integers(70, 96))
                draw_picture(is_cat, rng).save(folder / f"{name}_{i:05d}.jpg", quality=quality)
        manifest = {"version": GENERATOR_VERSION, "n_train": n_train, "n_test": n_test, "seed": seed}
        (staging / "manifest.json").write_text(json.dumps(manifest))
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def ensure_builtin_dataset(
    root: str | Path = DEFAULT_BUILTIN_DIR, n_train: int = 1000, n_test: int = 200, seed: int = 0
) -> Path:
    """The built-in dataset at ``root``, generated on first use (a few seconds) and reused after."""
    root = Path(root)
    wanted = {"version": GENERATOR_VERSION, "n_train": n_train, "n_test": n_test, "seed": seed}
    try:
        if json.loads((root / "manifest.json").read_text()) == wanted:
            return root
    except (OSError, ValueError):
        pass
    print(f"Generating the built-in cat/dog dataset in {root}/ ({n_train} train + {n_test} test pictures)...")
    return generate_dataset(root, n_train, n_test, seed)


__all__ = [
    "CAT",
    "DEFAULT_BUILTIN_DIR",
    "draw_picture",
    "draw_shape",
    "ensure_builtin_dataset",
    "generate_classes_dataset",
    "generate_dataset",
]
