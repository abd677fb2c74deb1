"""Shared fixtures: every test in its own working directory and cache, a tiny generated dataset, a tiny config.

Helpers that are plain functions live in helpers.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from helpers import make_tiny_config

from catdog_lightning.data.synthetic import generate_dataset


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
    return make_tiny_config(tiny_dataset, tmp_path)
