"""The lesson's PyTorch program, kept runnable: the baseline the other results are measured against.

As the lesson wrote it: every epoch opens, converts, resizes and tensorises every photo of train/
(torchvision ``Resize((64, 64))`` + ``ToTensor``), feeds shuffled batches of 32 to the MLP
12288 -> 256 -> 64 -> 1 with BCE (here on logits: the lesson's Sigmoid + BCELoss, computed stably)
and plain Adam at 1e-3 for 200 epochs, on all of train/ (no validation split), then reports
accuracy on test/.

``decode_once=True`` builds the same tensors once before the first epoch. The loader draws its
shuffle from the same global RNG and nothing else touches it, so the run is bit for bit the same
(tests/lab/test_lesson.py checks), minus the decoding of every epoch (docs/RESULTS.md says how long).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from catdog_lightning.data.scan import scan_labelled_folder
from catdog_lightning.models import MLP

IMAGE_SIZE, BATCH, LR, EPOCHS = 64, 32, 1e-3, 200


class LessonDataset(Dataset):
    """As the lesson wrote it: open, convert, resize and tensorise a file each time it is asked for."""

    def __init__(self, files, image_size: int = IMAGE_SIZE):
        from torchvision import transforms

        self.files = files
        self.transform = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i].path) as img:
            return self.transform(img.convert("RGB")), self.files[i].label


def decoded_once(dataset: Dataset) -> TensorDataset:
    """Every item of ``dataset`` computed now, once, as one tensor dataset."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return TensorDataset(torch.stack(images), torch.tensor(labels))


def fit_epochs(net: nn.Module, batches, epochs: int, fused: bool = False) -> list[float]:
    """The lesson's loop: BCE on logits, Adam, one pass over ``batches()`` per epoch; seconds per epoch.

    ``fused=False`` is Adam as the lesson wrote it; ``True`` is the fused Adam this project trains with.
    """
    opt = torch.optim.Adam(net.parameters(), lr=LR, fused=fused)
    loss_fn = nn.BCEWithLogitsLoss()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for images, labels in batches():
            loss = loss_fn(net(images), labels.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times


@torch.no_grad()
def accuracy(net: nn.Module, dataset: Dataset) -> float:
    net.eval()
    right = 0
    for images, labels in DataLoader(dataset, batch_size=256):
        right += int(((net(images) > 0).long() == labels).sum())
    net.train()
    return right / len(dataset)


def run_lesson(
    data_dir: str | os.PathLike,
    epochs: int = EPOCHS,
    seed: int = 0,
    decode_once: bool = False,
    run_dir: str | os.PathLike | None = None,
    image_size: int = IMAGE_SIZE,
) -> dict:
    """Train the lesson's MLP on ``<data_dir>/train`` and measure it on ``<data_dir>/test``.

    Returns (and writes to ``<run_dir>/metrics.json`` when given) train and test accuracy and timing.
    """
    root = Path(data_dir)
    train_set: Dataset = LessonDataset(scan_labelled_folder(root / "train").files, image_size)
    test_set: Dataset = decoded_once(LessonDataset(scan_labelled_folder(root / "test").files, image_size))
    if decode_once:
        train_set = decoded_once(train_set)
    torch.manual_seed(seed)
    net = MLP(image_size)
    loader = DataLoader(train_set, batch_size=BATCH, shuffle=True)
    start = time.perf_counter()
    epoch_s = fit_epochs(net, lambda: loader, epochs)
    metrics = {
        "train/acc": accuracy(net, train_set if decode_once else decoded_once(train_set)),
        "test/acc": accuracy(net, test_set),
        "train_seconds": time.perf_counter() - start,
        "median_epoch_s": sorted(epoch_s)[len(epoch_s) // 2],
        "epochs": epochs,
        "seed": seed,
        "decode_once": decode_once,
    }
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def run_lesson_cli(args: dict) -> dict:
    """scripts/lesson.py: check the flags, run, print the result."""
    from catdog_lightning.data.synthetic import DEFAULT_BUILTIN_DIR, ensure_builtin_dataset
    from catdog_lightning.errors import ConfigError, DataError
    from catdog_lightning.storage.runs import next_run_name

    if args["epochs"] < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args['epochs']}; the lesson uses {EPOCHS}.")
    data_dir = Path(args["data_dir"]) if args.get("data_dir") else ensure_builtin_dataset(DEFAULT_BUILTIN_DIR)
    for split in ("train", "test"):
        if not (data_dir / split).is_dir():
            raise DataError(f"--data_dir {data_dir} has no {split}/ folder; the lesson needs train/ and test/.")
    logs_dir = Path(args["logs_dir"])
    run_dir = logs_dir / (args.get("run_name") or next_run_name(logs_dir, "lesson"))
    mode = "decoding once" if args["decode_once"] else "decoding every epoch, as written"
    print(f"The lesson's loop on {data_dir}: {args['epochs']} epochs, seed {args['seed']}, {mode}")
    metrics = run_lesson(data_dir, args["epochs"], args["seed"], args["decode_once"], run_dir)
    print(
        f"train {metrics['train/acc']:.4f}  test {metrics['test/acc']:.4f}  in {metrics['train_seconds']:.1f} s "
        f"({metrics['median_epoch_s']:.2f} s/epoch)\n  run dir     {run_dir}"
    )
    return metrics
