"""What tests share: where things are, real image files, tiny configs, the train.py command line, and the
check that two runs ended identically. Fixtures are in conftest.py; no test file imports another."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from catdog_lightning.errors import Interrupted
from catdog_lightning.storage.checkpoints import read_checkpoint
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge

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


def make_tiny_config(data_dir: Path, tmp: Path) -> dict:
    """A train() config that fits in a few seconds on a CPU: 16x16 images, a [16, 8] MLP, 2 epochs."""
    return {
        "data": {"data_dir": str(data_dir), "image_size": 16, "batch_size": 8, "cache_dir": str(tmp / "cache")},
        "model": {"net": net_spec(hidden_dims=[16, 8])},
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
        "--model.net.init_args.hidden_dims",
        str(config["model"]["net"]["init_args"]["hidden_dims"]),
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


def fit_weights(config):
    metrics = train(config)
    state = torch.load(Path(metrics["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return metrics, state


def assert_same(a, b):
    (metrics_a, state_a), (metrics_b, state_b) = a, b
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    for key in ["val/acc", "test/acc", "test/f1", "test/auroc", "test/loss", "best_epoch", "global_step"]:
        assert metrics_a[key] == metrics_b[key], key


def stopped_mid_epoch_then_resumed(config: dict, tmp_path: Path):
    """(an unbroken run, the same run Ctrl-C'd in the middle of epoch 1 then resumed with --ckpt_path last)."""

    class CtrlC(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2:
                os.kill(os.getpid(), signal.SIGINT)

    straight = fit_weights(merge(config, {"logs_dir": str(tmp_path / "a")}))
    with pytest.raises(Interrupted):
        train(merge(config, {"logs_dir": str(tmp_path / "b")}), callbacks=[CtrlC()])
    stopped_at = read_checkpoint(tmp_path / "b" / "version_0" / "checkpoints" / "last.ckpt")["global_step"]
    return straight, fit_weights({"ckpt_path": "last", "logs_dir": str(tmp_path / "b")}), stopped_at


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """scripts/serve.py in a subprocess on a free port, once its /health answers; ``stop()`` ends it (and every
    process it started). Its output goes to a file, so a chatty server never blocks on a full pipe."""

    def __init__(self, ckpt: str, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        key = flags[flags.index("--api_key") + 1] if "--api_key" in flags else None
        if "--api_key_file" in flags:
            key = Path(flags[flags.index("--api_key_file") + 1]).read_text().splitlines()[0].strip()
        self.headers = {"X-API-Key": key} if key else {}
        args = [sys.executable, str(ROOT / "scripts" / "serve.py"), "--ckpt_path", ckpt, "--port", str(self.port),
                *flags]  # fmt: skip
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.wait_healthy()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_healthy(self, seconds: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/health", timeout=2, headers=self.headers).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server never became healthy: {self.output()[-2000:]}")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def net_spec(name: str | None = None, **init_args) -> dict:
    """``--model.net`` as a config holds it: a short name or class path and its init_args; without a name, only
    init_args (the default network's, or a resumed run's own)."""
    return {"class_path": name, "init_args": init_args} if name else {"init_args": init_args}
