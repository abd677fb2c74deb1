"""Shared fixtures: real image files on disk under tmp_path, tiny configs, CPU only."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catdog_lightning.data.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "catdog-a"
requires_real_data = pytest.mark.skipif(not (REAL_DATA / "train").is_dir(), reason=f"real photos not at {REAL_DATA}")


def write_image(path: Path, colour=(200, 50, 50), size=(40, 30), mode="RGB", fmt=None) -> Path:
    """A real image file of the given mode and size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        img = Image.new("RGB", size, colour)
    else:
        img = Image.new("RGB", size, colour).convert(mode)
    img.save(path, format=fmt)
    return path


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own working directory and decode cache; nothing touches ~/.cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    warnings.filterwarnings("ignore", ".*does not have many workers.*")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """40 train + 16 test generated pictures in class folders (shared, read-only by convention)."""
    root = tmp_path_factory.mktemp("tiny") / "catdog"
    return generate_dataset(root, n_train=40, n_test=16, seed=3)


def make_tiny_config(data_dir: Path, tmp: Path) -> dict:
    """A train() config that fits in a few seconds on a CPU: 16x16 images, a [16, 8] MLP, 2 epochs."""
    return {
        "data": {"data_dir": str(data_dir), "image_size": 16, "batch_size": 8, "cache_dir": str(tmp / "cache")},
        "model": {"hidden_dims": [16, 8]},
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "seed_everything": 7,
        "logs_dir": str(tmp / "logs"),
    }


@pytest.fixture
def tiny_config(tiny_dataset, tmp_path) -> dict:
    return make_tiny_config(tiny_dataset, tmp_path)


def train_script(config: dict, *flags: str) -> list[str]:
    """The command line running scripts/train.py on ``config``'s data, model size and logs folder."""
    data = config["data"]
    return [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        "--data.data_dir",
        data["data_dir"],
        "--data.image_size",
        str(data["image_size"]),
        "--data.cache_dir",
        data["cache_dir"],
        "--model.hidden_dims",
        str(config["model"]["hidden_dims"]),
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--logs_dir",
        config["logs_dir"],
        *flags,
    ]


def pixels(seed: int, size=(24, 24)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size[::-1], 3), dtype=np.uint8)
