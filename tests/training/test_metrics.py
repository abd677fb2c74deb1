"""Reported metrics are computed on probabilities: the same whatever the batch size, and equal to evaluate.py's."""

import json

import lightning as L
import pytest
import torch
from helpers import make_tiny_config as make_config
from helpers import net_spec

from catdog_lightning.cli import evaluate_main
from catdog_lightning.data import CatDogDataModule
from catdog_lightning.models import CatDogClassifier
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge
from catdog_lightning.training.stages import evaluate_checkpoint

CPU = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


def test_logits_inside_0_1_are_not_mistaken_for_probabilities(tiny_dataset, tmp_path):
    """Every logit is 0.25, i.e. P(cat) 0.56: every image is called cat, at any batch size.

    (Fed logits, torchmetrics would threshold 0.25 at 0.5 and call every image dog.)
    """
    model = CatDogClassifier(image_size=16, net=net_spec(hidden_dims=[4]))
    last = model.net.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(0.25)
    for batch_size in (1, 5, 16):
        data = CatDogDataModule(tiny_dataset, image_size=16, batch_size=batch_size, cache_dir=str(tmp_path))
        tested = L.Trainer(**CPU, logger=False)
        metrics = tested.test(model, datamodule=data, verbose=False)[0]
        assert metrics["test/acc"] == pytest.approx(0.5), batch_size  # 8 cats of 16, all called cat
        assert metrics["test/f1"] == pytest.approx(2 / 3), batch_size
        assert metrics["test/auroc"] == pytest.approx(0.5), batch_size


def test_trained_metrics_do_not_depend_on_batch_size_and_equal_evaluate(tiny_config, tmp_path):
    # The reliability report's repro: small batches, a low rate, so many logits sit inside [0, 1].
    config = merge(tiny_config, {"data": {"batch_size": 2}, "model": {"lr": 1e-4}, "test_checkpoint": "last"})
    metrics = train(config)
    ckpt = metrics["tested_checkpoint"]
    cache = {"cache_dir": tiny_config["data"]["cache_dir"]}
    for batch_size in (1, 3, 16):
        again = evaluate_checkpoint(ckpt, {**cache, "batch_size": batch_size}, CPU)
        for key in ("test/acc", "test/f1", "test/auroc"):
            assert again[key] == pytest.approx(metrics[key], abs=1e-6), (key, batch_size)
    report = tmp_path / "evaluation.json"
    assert evaluate_main(["--ckpt_path", ckpt, "--report", str(report)]) == 0
    scored = json.loads(report.read_text())
    assert scored["accuracy"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert scored["f1"] == pytest.approx(metrics["test/f1"], abs=1e-6)
    assert scored["auroc"] == pytest.approx(metrics["test/auroc"], abs=1e-6)


def test_evaluate_scores_only_the_carved_test_split_and_equals_training(tiny_dataset, tmp_path):
    """A folder with no test/: training carves a test split from train/; evaluate.py scores exactly it."""
    import shutil

    root = tmp_path / "no-test"
    shutil.copytree(tiny_dataset / "train", root / "train")
    config = merge(make_config(root, tmp_path), {"model": {"lr": 1e-4}, "test_checkpoint": "last"})
    metrics = train(config)
    assert metrics["test_is_carved"]
    carved = CatDogDataModule(root, image_size=16, cache_dir=config["data"]["cache_dir"])
    carved.setup("test")
    report_path = tmp_path / "carved.json"
    ckpt = metrics["tested_checkpoint"]
    assert evaluate_main(["--ckpt_path", ckpt, "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["images"] == len(carved.test_set) == 4  # 10% of 40, not all 40 photos under the folder
    assert "carved" in report["folder"]
    assert {w["path"] for w in report["misclassified"]} <= set(carved.test_set.paths)
    assert report["accuracy"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert report["auroc"] == pytest.approx(metrics["test/auroc"], abs=1e-6)
