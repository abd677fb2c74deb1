"""One way to name a checkpoint for every command (a file, last, best, or the latest finished run's best), a
live run never read or written, and tools as quiet in a log as train.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, make_tiny_config

from catdog_lightning import load_classifier
from catdog_lightning.cli import evaluate_main, export_main, predict_main
from catdog_lightning.storage.runs import RunDirectory, claim
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge


@pytest.fixture
def two_runs(tiny_dataset, tmp_path):
    """version_0 finished; version_1 newer, and held by a live process (its lock taken here)."""
    config = make_tiny_config(tiny_dataset, tmp_path)
    first = train(merge(config, {"trainer": {"max_epochs": 1}}))
    second = train(merge(config, {"trainer": {"max_epochs": 1}}))
    logs = Path(config["logs_dir"])
    run, lock, _ = claim(RunDirectory(logs, Path(second["run_dir"]).name), new=False, auto_name=False)
    yield logs, first, second, config
    lock.release()


def test_a_live_run_is_named_and_skipped_by_every_command(two_runs, capsys):
    logs, first, second, config = two_runs
    photos = config["data"]["data_dir"]
    assert predict_main([photos, "--logs_dir", str(logs)]) == 0
    err = capsys.readouterr().err
    assert f"skipping {Path(second['run_dir'])}: process" in err and Path(first["best_checkpoint"]).name in err
    assert evaluate_main(["--logs_dir", str(logs)]) == 0
    assert (Path(first["run_dir"]) / "evaluation.json").is_file()
    assert not (Path(second["run_dir"]) / "evaluation.json").exists(), "nothing written into the live run"
    assert load_classifier(logs_dir=logs).image_size == 16  # the Python API chooses the same way
    assert "skipping" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["last", "best"])
def test_last_and_best_name_checkpoints_in_predict_evaluate_and_export(tiny_config, tmp_path, which, capsys):
    metrics = train(tiny_config)
    logs = ["--logs_dir", tiny_config["logs_dir"], "--ckpt_path", which]
    assert predict_main([tiny_config["data"]["data_dir"], *logs]) == 0
    assert evaluate_main([*logs, "--report", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["checkpoint"].endswith(f"{which}.ckpt")
    assert export_main([*logs, "--format", "torchscript", "--output", str(tmp_path / "m.pt")]) == 0
    assert metrics["run_dir"] in capsys.readouterr().out + json.loads((tmp_path / "r.json").read_text())["checkpoint"]


def test_evaluate_into_a_file_is_quiet(tiny_config, tmp_path):
    metrics = train(tiny_config)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--ckpt_path",
                           metrics["best_checkpoint"]], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    everything = done.stdout + done.stderr
    for noise in ("GPU available", "Tip:", "\r", "Warning", "deprecated"):
        assert noise not in everything, noise


def test_auroc_of_photos_of_one_class_is_undefined(tiny_config, tmp_path, capsys):
    import shutil

    metrics = train(tiny_config)
    cats = tmp_path / "only_cats"
    shutil.copytree(Path(tiny_config["data"]["data_dir"]) / "test" / "cat", cats / "cat")
    assert evaluate_main(["--ckpt_path", metrics["best_checkpoint"], "--data.data_dir", str(cats),
                          "--report", str(tmp_path / "r.json")]) == 0  # fmt: skip
    assert "auroc      undefined (photos of one class only)" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["auroc"] is None
