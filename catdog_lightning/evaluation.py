"""Score a trained model on labelled photos: metrics, confusion matrix, and the mistakes themselves.

One path with training: the photos come from a ``CatDogDataModule`` with the checkpoint's own data settings
(so the decode cache, the splits and the pixels are training's), and the probabilities from Lightning's
``trainer.predict``. Without ``--data.data_dir`` that is the run's own test split, the ``test/`` folder or
the split carved from ``train/``, so the numbers equal the run's test metrics; with one, every labelled
photo of that folder (of its ``test/``, when it has one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_confusion_matrix,
    binary_f1_score,
    binary_precision,
    binary_recall,
)

from .atomic import atomic_write_text
from .checkpoints import read_checkpoint
from .data import CatDogDataModule
from .data.scan import CAT
from .errors import ConfigError, DataError
from .inference import checkpoint_or_latest, load_model
from .pictures import caption_grid

CPU_EVALUATOR = {"accelerator": "cpu", "devices": 1}


def evaluation_folder(data_dir: str | os.PathLike) -> Path:
    """``<data_dir>/test`` when there is one (a training folder), else ``data_dir`` itself."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data.data_dir {data_dir} does not exist; point it at a folder of labelled photos.")
    return data_dir / "test" if (data_dir / "test").is_dir() else data_dir


def checkpoint_data(saved: dict, data: dict | None = None) -> CatDogDataModule:
    """A DataModule with a (read) checkpoint's own data settings, updated by ``data``."""
    return CatDogDataModule(**{**saved.get("datamodule_hyper_parameters", {}), **(data or {})})


def _evaluator(trainer: dict, **options) -> L.Trainer:
    """A Trainer that only evaluates: no logger, no checkpoints, every image once (no distributed sampler)."""
    return L.Trainer(**trainer, logger=False, enable_checkpointing=False, use_distributed_sampler=False, **options)


def predicted_probabilities(
    ckpt_path: str | os.PathLike, saved: dict, datamodule: CatDogDataModule, evaluator: L.Trainer
):
    """P(cat) of every image of the DataModule's test split, in order, from Lightning's ``trainer.predict``."""
    return torch.cat(evaluator.predict(load_model(ckpt_path, saved), datamodule=datamodule)).cpu().float()


def evaluation_data(saved: dict, data_dir: str | None = None) -> CatDogDataModule:
    """The checkpoint's data settings, set up for scoring: its own test split, or ``data_dir``'s photos."""
    datamodule = checkpoint_data(saved, {"augment": False})
    if data_dir is None:
        datamodule.prepare_data()
        datamodule.setup("test")
    else:
        datamodule.setup_test_folder(evaluation_folder(data_dir))
    return datamodule


def _where(datamodule: CatDogDataModule, data_dir: str | None) -> str:
    if data_dir is not None:
        return str(evaluation_folder(data_dir))
    if datamodule.test_is_carved:
        return f"{datamodule.root / 'train'} (the test split carved from it)"
    return str(datamodule.root / "test")


def evaluate(
    ckpt_path: str | os.PathLike, data_dir: str | None = None, trainer: dict | None = None
) -> tuple[dict, CatDogDataModule]:
    """Accuracy, precision, recall, F1, AUROC, confusion matrix and misclassified files (worst first), and
    the data they were measured on."""
    saved = read_checkpoint(ckpt_path)
    datamodule = evaluation_data(saved, data_dir)
    test = datamodule.test_set
    if test is None or len(test) == 0:
        raise DataError(f"no labelled test images in {_where(datamodule, data_dir)}.")
    evaluator = _evaluator(trainer or CPU_EVALUATOR, enable_progress_bar=len(test) >= 256, enable_model_summary=False)
    probs = predicted_probabilities(ckpt_path, saved, datamodule, evaluator)
    labels = test.labels
    tn, fp, fn, tp = binary_confusion_matrix(probs, labels).flatten().tolist()
    wrong = [
        {"path": path, "label": "cat" if y == CAT else "dog", "p_cat": p, "row": row}
        for row, (path, p, y) in enumerate(zip(test.paths, probs.tolist(), labels.tolist(), strict=True))
        if (p > 0.5) != (y == CAT)
    ]
    wrong.sort(key=lambda w: abs((w["label"] == "cat") - w["p_cat"]), reverse=True)
    return {
        "checkpoint": str(ckpt_path),
        "folder": _where(datamodule, data_dir),
        "images": len(test),
        "accuracy": float(binary_accuracy(probs, labels)),
        "precision": float(binary_precision(probs, labels)),
        "recall": float(binary_recall(probs, labels)),
        "f1": float(binary_f1_score(probs, labels)),
        "auroc": float(binary_auroc(probs, labels)),
        "confusion_matrix": {
            "rows": ["true dog", "true cat"],
            "columns": ["predicted dog", "predicted cat"],
            "counts": [[tn, fp], [fn, tp]],
        },
        "misclassified": wrong,
        "skipped": [{"path": path, "reason": reason} for path, reason in datamodule.test_skipped],
    }, datamodule


def evaluate_checkpoint(
    ckpt_path: str | Path, data: dict | None = None, trainer: dict | None = None, stage: str = "test"
) -> dict:
    """The LightningModule's own metrics of a checkpoint on its test (or ``stage="validate"``: validation)
    images, under any Trainer (e.g. several DDP processes). The data settings are the checkpoint's, updated
    by ``data``."""
    from .training import TRAINER_DEFAULTS

    saved = read_checkpoint(ckpt_path)
    evaluator = _evaluator({**TRAINER_DEFAULTS, **(trainer or {})})
    run = evaluator.test if stage == "test" else evaluator.validate
    metrics = run(load_model(ckpt_path, saved), datamodule=checkpoint_data(saved, data), verbose=False)[0]
    return {k: float(v) for k, v in metrics.items()}


def save_errors_grid(report: dict, datamodule: CatDogDataModule, path: str | os.PathLike, count: int = 24) -> int:
    """A picture of the ``count`` worst mistakes, as the model saw them, captioned with the true label and P(cat)."""
    worst = report["misclassified"][:count]
    rows = torch.tensor([w["row"] for w in worst], dtype=torch.long)
    pictures = [img.permute(1, 2, 0).numpy() for img in datamodule.test_set.take(rows)] if worst else []
    captions = [f"{w['label']} P(cat)={w['p_cat']:.2f}" for w in worst]
    caption_grid(pictures, captions, [False] * len(worst), columns=min(8, max(1, len(worst)))).save(path)
    return len(worst)


def format_report(report: dict) -> str:
    (tn, fp), (fn, tp) = report["confusion_matrix"]["counts"]
    lines = [
        f"Evaluated {report['checkpoint']} on {report['images']} images in {report['folder']}",
        f"  accuracy   {report['accuracy']:.4f}",
        f"  precision  {report['precision']:.4f}   (of images called cat, the share that are cats)",
        f"  recall     {report['recall']:.4f}   (of cats, the share found)",
        f"  f1         {report['f1']:.4f}",
        f"  auroc      {report['auroc']:.4f}",
        "  confusion matrix    predicted dog  predicted cat",
        f"    true dog          {tn:>13}  {fp:>13}",
        f"    true cat          {fn:>13}  {tp:>13}",
        f"  misclassified: {len(report['misclassified'])} (worst first)",
    ]
    lines += [f"    {w['path']}  true {w['label']}  P(cat)={w['p_cat']:.3f}" for w in report["misclassified"][:10]]
    if len(report["misclassified"]) > 10:
        lines.append(f"    ... {len(report['misclassified']) - 10} more in the JSON report")
    if report["skipped"]:
        lines.append(f"  skipped: {len(report['skipped'])} file(s), listed in the JSON report")
    return "\n".join(lines)


def default_report(ckpt: str | os.PathLike) -> Path:
    """``evaluation.json`` in the checkpoint's run directory; beside a checkpoint that is not in one."""
    from .runs import RunDirectory

    run = RunDirectory.owning(Path(ckpt))
    return run.path / "evaluation.json" if run is not None else Path(ckpt).with_suffix(".evaluation.json")


def evaluate_command(args: dict) -> None:
    """scripts/evaluate.py: score, print, write the JSON report and (``--errors_grid``) the worst mistakes."""
    ckpt = checkpoint_or_latest(args.get("ckpt_path"), args["logs_dir"])
    report, datamodule = evaluate(ckpt, args["data"]["data_dir"])
    print(format_report(report))
    path = Path(args.get("report") or default_report(ckpt))
    replaced = " (replaced the previous report)" if path.exists() else ""
    atomic_write_text(path, json.dumps(report, indent=2))
    print(f"  report     {path}{replaced}")
    if args.get("errors_grid"):
        shown = save_errors_grid(report, datamodule, args["errors_grid"])
        print(f"  errors     {args['errors_grid']} ({shown} worst mistakes)")


def stage_command(stage: str, flags: dict) -> None:
    """``train.py validate|test|predict --ckpt_path PATH|last|best``: one stage of a trained checkpoint.

    The checkpoint's own data settings, updated by the ``--data.*`` flags given; ``--trainer.*`` as for fit.
    validate and test print the LightningModule's metrics; predict prints P(cat) for each test image.
    """
    from .runs import DEFAULT_LOGS_DIR, find_checkpoint
    from .trainer_setup import quiet_known_warnings
    from .training import TRAINER_DEFAULTS

    quiet_known_warnings()
    ckpt = flags.get("ckpt_path")
    if not ckpt:
        raise ConfigError(f"{stage} needs --ckpt_path: a checkpoint file, last or best (of the latest run).")
    if ckpt in ("last", "best"):
        logs_dir = Path(flags.get("logs_dir") or DEFAULT_LOGS_DIR)
        found = find_checkpoint(logs_dir, ckpt, flags.get("run_name"))
        if found is None:
            raise ConfigError(f"--ckpt_path {ckpt}: no {ckpt}.ckpt under {logs_dir}; train a run first.")
        ckpt = str(found)
    trainer = {**TRAINER_DEFAULTS, "enable_progress_bar": False, **(flags.get("trainer") or {})}
    if stage in ("validate", "test"):
        metrics = evaluate_checkpoint(ckpt, flags.get("data"), trainer, stage)
        print(f"{stage} metrics of {ckpt}")
        for key, value in sorted(metrics.items()):
            print(f"  {key:<12} {value:.4f}")
        return
    saved = read_checkpoint(ckpt)
    datamodule = checkpoint_data(saved, flags.get("data"))
    probs = predicted_probabilities(ckpt, saved, datamodule, _evaluator(trainer)).tolist()
    for path, p in zip(datamodule.test_set.paths, probs, strict=True):
        print(f"{path}\t{p:.4f}\t{'cat' if p > 0.5 else 'dog'}")
