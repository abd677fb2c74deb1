"""Train the lesson's NumPy network on exactly the data and splits that ``train()`` uses.

The DataModule decodes (or loads from the shared cache) and splits the folder; the network sees
the same train/val/test images as the Lightning MLP, and logs to TensorBoard under the same
``lightning_logs/`` so both runs appear side by side.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from catdog_lightning.data import CatDogDataModule
from catdog_lightning.errors import ConfigError
from catdog_lightning.numpy_net import LESSON_LAYER_DIMS, NumpyNet, images_to_columns
from catdog_lightning.storage.runs import DEFAULT_LOGS_DIR, next_run_name

DEFAULTS = {
    "layer_dims": list(LESSON_LAYER_DIMS),
    "activations": "relu",
    "lr": 0.01,
    "iterations": 2000,
    "init": "he",
    "batch_size": None,
    "seed": 1,
    "print_every": 100,
}


def _columns(dataset) -> tuple[np.ndarray, np.ndarray]:
    return images_to_columns(dataset.images), dataset.labels.numpy().reshape(1, -1).astype(np.float32)


def train_numpy(config: dict) -> dict:
    """Fit the NumPy network; returns (and writes to metrics.json) train/val/test accuracy and timing."""
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
    if not cfg["lr"] > 0:
        raise ConfigError(f"--lr must be positive, got {cfg['lr']}; the lesson uses 0.01.")
    if cfg["iterations"] < 1 or cfg["print_every"] < 1:
        raise ConfigError("--iterations and --print_every must be at least 1.")
    if cfg["batch_size"] is not None and cfg["batch_size"] < 1:
        raise ConfigError(f"--batch_size must be at least 1, got {cfg['batch_size']} (omit it for full batch).")
    datamodule = CatDogDataModule(**(config.get("data") or {}))
    inputs = 3 * datamodule.hparams.image_size**2
    if cfg["layer_dims"][0] != inputs:
        raise ConfigError(
            f"--layer_dims starts with {cfg['layer_dims'][0]}, but --data.image_size "
            f"{datamodule.hparams.image_size} gives {inputs} inputs; start it with {inputs}."
        )
    try:
        net = NumpyNet(cfg["layer_dims"], cfg["activations"], cfg["init"], cfg["seed"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if len(datamodule.class_names) != 2:
        raise ConfigError(
            f"the NumPy network is the lesson's two-class one (one sigmoid output); "
            f"{datamodule.root / 'train'} holds {len(datamodule.class_names)} classes. Train them with "
            f"python scripts/train.py --data.data_dir {datamodule.root}."
        )
    datamodule.prepare_data()
    datamodule.setup("fit")
    print(datamodule.summary)
    (X, Y), (X_test, Y_test) = _columns(datamodule.train_set), _columns(datamodule.test_set)
    val = _columns(datamodule.val_set) if datamodule.val_set is not None else None  # none with val_fraction 0

    logs_dir = Path(config.get("logs_dir") or DEFAULT_LOGS_DIR)
    run = logs_dir / (config.get("run_name") or next_run_name(logs_dir, "numpy"))
    run.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(run))

    def on_record(i: int, cost: float) -> None:
        print(f"Cost after iteration {i}: {cost:.6f}")  # the lesson's progress line
        writer.add_scalar("train/loss", cost, i)
        if val is not None:
            writer.add_scalar("val/acc", net.accuracy(*val), i)

    start = time.perf_counter()
    net.fit(X, Y, cfg["lr"], cfg["iterations"], cfg["batch_size"], cfg["print_every"], cfg["seed"], on_record)
    seconds = time.perf_counter() - start
    metrics = {
        "train/acc": net.accuracy(X, Y),
        "val/acc": net.accuracy(*val) if val is not None else None,
        "test/acc": net.accuracy(X_test, Y_test),
        "train_seconds": seconds,
        "iterations": cfg["iterations"],
        "run_dir": str(run),
    }
    writer.add_scalar("test/acc", metrics["test/acc"], cfg["iterations"])
    writer.add_hparams(
        {k: str(v) if isinstance(v, list) or v is None else v for k, v in cfg.items()},
        {"hparam/test_acc": metrics["test/acc"]},
        run_name=".",
    )
    writer.close()
    net.save(run / "numpy_net.npz")
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(
        f"\nNumPy network {cfg['layer_dims']} ({cfg['iterations']} iterations, lr {cfg['lr']}): "
        f"train {metrics['train/acc']:.4f}  val {metrics['val/acc'] or float('nan'):.4f}  "
        f"test {metrics['test/acc']:.4f}  "
        f"in {seconds:.1f} s\n  run dir     {run}\n  weights     {run / 'numpy_net.npz'}"
    )
    return metrics
