"""Killed runs lose nothing but the work since the last checkpoint; resumed runs end where they would have."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import assert_same, fit_weights, net_spec, stopped_mid_epoch_then_resumed, train_script

from catdog_lightning.errors import Interrupted
from catdog_lightning.storage.atomic import TMP_SUFFIX
from catdog_lightning.storage.checkpoints import AtomicCheckpointIO, read_checkpoint
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge

# Runs train(config) from JSON; KILL_ON_LAST_RENAME=n SIGKILLs the process on its n-th last.ckpt save,
# after the new file is written and fsynced but before it is renamed over the old one.
DRIVER = """
import json, os, signal, sys
kill_at = int(os.environ.get("KILL_ON_LAST_RENAME", "0"))
if kill_at:
    real_replace, saves = os.replace, [0]
    def replace(src, dst):
        if str(dst).endswith("last.ckpt"):
            saves[0] += 1
            if saves[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)
    os.replace = replace
from catdog_lightning.training import train
train(json.loads(sys.argv[1]))
"""


def start(args, cwd, env=None):
    return subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )


def wait_for(path: Path, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def slow_config(tiny_config, epochs):
    return merge(tiny_config, {"trainer": {"max_epochs": epochs}, "run_name": "r"})


def test_atomic_checkpoint_io_keeps_the_old_file_when_a_save_dies(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "hyper_parameters": {}}, path)

    def dies(obj, fh):
        fh.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "hyper_parameters": {}}, path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_kill_9_during_a_checkpoint_write_then_resume(tiny_config, tmp_path):
    config = slow_config(tiny_config, 4)
    proc = start([sys.executable, "-c", DRIVER, json.dumps(config)], tmp_path, {"KILL_ON_LAST_RENAME": "2"})
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    ckpts = Path(config["logs_dir"]) / "r" / "checkpoints"
    assert read_checkpoint(ckpts / "last.ckpt")["epoch"] == 0, "the first epoch's last.ckpt survives intact"
    assert list(ckpts.glob(f".last.ckpt.*{TMP_SUFFIX}")), "the killed write left its temporary beside it"
    metrics = train({"ckpt_path": "last", "logs_dir": config["logs_dir"]})
    assert metrics["epochs_trained"] == 4
    assert not list(ckpts.glob(f".*{TMP_SUFFIX}")), "stale temporaries are cleaned up on resume"
    for ckpt in ckpts.glob("*.ckpt"):
        read_checkpoint(ckpt)


def test_kill_9_at_several_moments_then_resume_each_time(tiny_config, tmp_path):
    config = slow_config(tiny_config, 10_000)  # never finishes on its own: only kills stop it
    last = Path(config["logs_dir"]) / "r" / "checkpoints" / "last.ckpt"
    resume = {"ckpt_path": "last", "logs_dir": config["logs_dir"]}
    epochs_seen = []
    for delay in (0.0, 0.15, 0.4):
        before = last.stat().st_mtime_ns if last.exists() else 0
        proc = start([sys.executable, "-c", DRIVER, json.dumps(resume if before else config)], tmp_path)
        while not last.exists() or last.stat().st_mtime_ns == before:  # wait for a new checkpoint, then kill
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        time.sleep(delay)
        proc.kill()
        proc.communicate()
        epochs_seen.append(read_checkpoint(last)["epoch"])  # every last.ckpt left behind loads
    assert epochs_seen == sorted(epochs_seen) and epochs_seen[-1] > epochs_seen[0]
    metrics = train({**resume, "trainer": {"max_epochs": epochs_seen[-1] + 2}})
    assert metrics["epochs_trained"] == epochs_seen[-1] + 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_last_ckpt_and_say_how_to_resume(tiny_config, tmp_path, signum):
    args = train_script(tiny_config, "--trainer.max_epochs", "5000", "--run_name", "sig")
    proc = start(args, tmp_path)
    last = Path(tiny_config["logs_dir"]) / "sig" / "checkpoints" / "last.ckpt"
    wait_for(last, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "--ckpt_path last --run_name sig" in err and "Traceback" not in err
    saved = read_checkpoint(last)
    assert saved["global_step"] > 0
    # Resume and finish: one more epoch than the stop reached.
    metrics = train(
        {
            "ckpt_path": "last",
            "run_name": "sig",
            "logs_dir": tiny_config["logs_dir"],
            "trainer": {"max_epochs": saved["epoch"] + 2},
        }
    )
    assert metrics["epochs_trained"] == saved["epoch"] + 2


def test_checkpoint_every_n_steps_rewrites_last_mid_epoch(tiny_config):
    steps = []

    import lightning as L

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            path = Path(tiny_config["logs_dir"]) / "r" / "checkpoints" / "last.ckpt"
            if path.exists():
                steps.append(torch.load(path, weights_only=True)["global_step"])

    train(merge(slow_config(tiny_config, 1), {"checkpoint_every_n_steps": 2}), callbacks=[Watch()])
    assert 2 in steps and 4 in steps  # written within the first epoch (5 steps), before its end


@pytest.fixture
def deterministic_config(tiny_config):
    """Augmentation and dropout on, so every source of randomness is exercised."""
    return merge(
        tiny_config,
        {
            "trainer": {"deterministic": True, "max_epochs": 4},
            "data": {"augment": True},
            "model": {"net": net_spec(dropout=0.2)},
        },
    )


def test_interrupted_then_resumed_equals_uninterrupted(deterministic_config, tmp_path):
    straight = fit_weights(merge(deterministic_config, {"logs_dir": str(tmp_path / "a")}))
    train(merge(deterministic_config, {"logs_dir": str(tmp_path / "b"), "trainer": {"max_epochs": 2}}))
    resumed = fit_weights({"ckpt_path": "last", "logs_dir": str(tmp_path / "b"), "trainer": {"max_epochs": 4}})
    assert_same(straight, resumed)


def test_two_identical_deterministic_runs_are_identical(deterministic_config, tmp_path):
    assert_same(
        fit_weights(merge(deterministic_config, {"logs_dir": str(tmp_path / "a")})),
        fit_weights(merge(deterministic_config, {"logs_dir": str(tmp_path / "b")})),
    )


def test_a_run_stopped_mid_epoch_resumes_to_identical_weights_and_metrics(deterministic_config, tmp_path):
    """Ctrl-C in the middle of epoch 1 (last.ckpt written after its 3rd step), then --ckpt_path last."""
    straight, resumed, stopped_at = stopped_mid_epoch_then_resumed(deterministic_config, tmp_path)
    assert stopped_at == 5 + 3
    assert_same(straight, resumed)


class SignalAt(L.Callback):
    """Sends this process ``signum`` at train start (``batch=None``) or before a batch of epoch 0."""

    def __init__(self, signum: int, batch: int | None):
        self.signum, self.batch = signum, batch

    def on_train_start(self, trainer, pl_module):
        if self.batch is None:
            os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("when", ["SIGINT at train start", "SIGTERM at batch 3", "kill -9 during the second save"])
def test_a_run_stopped_in_epoch_0_resumes_to_the_unbroken_result(deterministic_config, tmp_path, when):
    """Stopped before its first validation, a run's best-so-far is still -inf: not a diverged weight."""
    config = merge(deterministic_config, {"checkpoint_every_n_steps": 2})
    straight = fit_weights(merge(config, {"logs_dir": str(tmp_path / "a")}))
    stopped = merge(config, {"logs_dir": str(tmp_path / "b"), "run_name": "r"})
    if when.startswith("kill"):  # the save after step 4 dies before its rename: last.ckpt is step 2's
        proc = start([sys.executable, "-c", DRIVER, json.dumps(stopped)], tmp_path, {"KILL_ON_LAST_RENAME": "2"})
        proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL
    else:
        signum, batch = (signal.SIGINT, None) if when.startswith("SIGINT") else (signal.SIGTERM, 2)
        with pytest.raises(Interrupted):
            train(stopped, callbacks=[SignalAt(signum, batch)])
    saved = read_checkpoint(tmp_path / "b" / "r" / "checkpoints" / "last.ckpt")
    assert saved["epoch"] == 0 and 0 < saved["global_step"] < 5, "stopped inside epoch 0, before any validation"
    resumed = fit_weights({"ckpt_path": "last", "run_name": "r", "logs_dir": str(tmp_path / "b")})
    assert_same(straight, resumed)


class SignalOutsideTheLoop(L.Callback):
    def __init__(self, signum: int, hook: str):
        self.signum, self.hook = signum, hook

    def on_sanity_check_start(self, trainer, pl_module):
        if self.hook == "sanity check":
            os.kill(os.getpid(), self.signum)

    def on_test_start(self, trainer, pl_module):
        if self.hook == "test":
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("hook, says", [("sanity check", "before training began"), ("test", "while testing")])
def test_a_signal_outside_the_training_loop_exits_with_its_code_and_a_line(tiny_config, capsys, signum, hook, says):
    from catdog_lightning.cli import run_cli

    stopper = SignalOutsideTheLoop(signum, hook)
    code = run_cli(lambda _: train(tiny_config, callbacks=[stopper]), [], parse=lambda *_: {})
    assert code == 128 + signum
    err = capsys.readouterr().err.strip()
    assert f"stopped by {signal.Signals(signum).name} {says}" in err
    if hook == "test":
        assert "train.py test --ckpt_path best" in err
