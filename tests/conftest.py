"""Shared fixtures: real image files on disk under tmp_path, tiny configs, CPU only."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catdog_lightning.data.synthetic import generate_dataset

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "catdog-a"
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


@pytest.fixture
def tiny_config(tiny_dataset, tmp_path) -> dict:
    """A train() config that fits in a few seconds on a CPU."""
    return {
        "data": {
            "data_dir": str(tiny_dataset),
            "image_size": 16,
            "batch_size": 8,
            "cache_dir": str(tmp_path / "cache"),
        },
        "model": {"hidden_dims": [16, 8]},
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "seed_everything": 7,
        "logs_dir": str(tmp_path / "logs"),
    }


def pixels(seed: int, size=(24, 24)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size[::-1], 3), dtype=np.uint8)
