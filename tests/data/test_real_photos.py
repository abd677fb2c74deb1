"""Real photos (Kaggle Dogs vs Cats in ../shared/data/catdog-a). Marked slow; skipped when absent."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import REAL_DATA, requires_real_data

from catdog_lightning.data import CatDogDataModule
from catdog_lightning.training import train

pytestmark = [pytest.mark.slow, requires_real_data]


def test_real_photos_decode_without_skips_and_split_as_documented(tmp_path):
    dm = CatDogDataModule(str(REAL_DATA), cache_dir=str(tmp_path / "c"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no photo of the 3,000 may be skipped
        dm.prepare_data()
        dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1800, 200, 1000)
    assert int(dm.val_set.labels.sum()) == 100 and int(dm.test_set.labels.sum()) == 500
    # Photos, not blank frames: every image has real contrast.
    assert float(dm.train_set.images.float().std(dim=(1, 2, 3)).min()) > 5


def test_brief_training_on_real_photos_beats_chance(tmp_path):
    metrics = train(
        {
            "data": {"data_dir": str(REAL_DATA), "cache_dir": str(tmp_path / "c")},
            "trainer": {"max_epochs": 4, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
            "seed_everything": 0,
            "logs_dir": str(tmp_path / "logs"),
        }
    )
    saved = json.loads((Path(metrics["run_dir"]) / "metrics.json").read_text())
    assert saved["test/acc"] > 0.53 and saved["test/auroc"] > 0.55
    assert not saved["test_is_carved"]


def test_draft_decoding_matches_full_decoding_closely(tmp_path):
    full = CatDogDataModule(str(REAL_DATA), draft=False, cache_dir=str(tmp_path / "c"))
    fast = CatDogDataModule(str(REAL_DATA), draft=True, cache_dir=str(tmp_path / "c"))
    for dm in (full, fast):
        dm.setup()
    diff = np.abs(full.test_set.images.numpy().astype(int) - fast.test_set.images.numpy().astype(int))
    assert diff.mean() < 4  # grey levels out of 255: the same pictures
