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
import sys
from pathlib import Path

import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_confusion_matrix,
    binary_f1_score,
    binary_precision,
    binary_recall,
)

from ..allow_list import allowed_modules
from ..data import CAT, CatDogDataModule
from ..data.scan import printable
from ..errors import ConfigError, DataError
from ..storage.atomic import atomic_write_text
from ..storage.checkpoints import read_checkpoint
from ..storage.runs import RunDirectory
from ..training.drawing import caption_grid
from ..training.stages import checkpoint_data, evaluator, predicted_probabilities
from .locate import checkpoint_or_latest
from .predictor import load_classifier

CPU_EVALUATOR = {"accelerator": "cpu", "devices": 1}


def evaluation_folder(data_dir: str | os.PathLike) -> Path:
    """``<data_dir>/test`` when there is one (a training folder), else ``data_dir`` itself."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data.data_dir {data_dir} does not exist; point it at a folder of labelled photos.")
    return data_dir / "test" if (data_dir / "test").is_dir() else data_dir


def evaluation_data(saved: dict, data_dir: str | None = None) -> CatDogDataModule:
    """The checkpoint's data settings, set up for scoring: its own test split, or ``data_dir``'s photos."""
    datamodule = checkpoint_data(saved, {"augment": False}, own_data=data_dir is None)
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
    ckpt_path: str | os.PathLike,
    data_dir: str | None = None,
    trainer: dict | None = None,
    backend: str = "torch",
    allowed: tuple[str, ...] = (),
) -> tuple[dict, CatDogDataModule]:
    """Accuracy, precision, recall, F1, AUROC, confusion matrix and misclassified files (worst first), and
    the data they were measured on."""
    saved = read_checkpoint(ckpt_path)
    datamodule = evaluation_data(saved, data_dir)
    test = datamodule.test_set
    if test is None or len(test) == 0:
        raise DataError(f"no labelled test images in {_where(datamodule, data_dir)}.")
    if backend == "torch":
        bar = len(test) >= 256 and sys.stdout.isatty()  # a bar redraws: only for a person watching a terminal
        evaluating = evaluator(trainer or CPU_EVALUATOR, enable_progress_bar=bar, enable_model_summary=False)
        probs = predicted_probabilities(ckpt_path, saved, datamodule, evaluating, allowed)
    else:  # the export on ONNX Runtime, on the very pixels the torch path scores
        onnx = load_classifier(ckpt_path, backend=backend, allowed=allowed)
        probs = torch.cat([onnx.probabilities(test.take(rows)) for rows in torch.arange(len(test)).split(256)])
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
        "backend": backend,
        "folder": _where(datamodule, data_dir),
        "images": len(test),
        "accuracy": float(binary_accuracy(probs, labels)),
        "precision": float(binary_precision(probs, labels)),
        "recall": float(binary_recall(probs, labels)),
        "f1": float(binary_f1_score(probs, labels)),
        # AUROC ranks cats against dogs: with photos of one class only there is nothing to rank (None).
        "auroc": float(binary_auroc(probs, labels)) if len(set(labels.tolist())) == 2 else None,
        "confusion_matrix": {
            "rows": ["true dog", "true cat"],
            "columns": ["predicted dog", "predicted cat"],
            "counts": [[tn, fp], [fn, tp]],
        },
        "misclassified": wrong,
        "skipped": [{"path": path, "reason": reason} for path, reason in datamodule.test_skipped],
    }, datamodule


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
    on_backend = f" ({report['backend']})" if report.get("backend", "torch") != "torch" else ""
    auroc = "undefined (photos of one class only)" if report["auroc"] is None else f"{report['auroc']:.4f}"
    lines = [
        f"Evaluated {report['checkpoint']}{on_backend} on {report['images']} images in {report['folder']}",
        f"  accuracy   {report['accuracy']:.4f}",
        f"  precision  {report['precision']:.4f}   (of images called cat, the share that are cats)",
        f"  recall     {report['recall']:.4f}   (of cats, the share found)",
        f"  f1         {report['f1']:.4f}",
        f"  auroc      {auroc}",
        "  confusion matrix    predicted dog  predicted cat",
        f"    true dog          {tn:>13}  {fp:>13}",
        f"    true cat          {fn:>13}  {tp:>13}",
        f"  misclassified: {len(report['misclassified'])} (worst first)",
    ]
    worst = report["misclassified"][:10]
    lines += [f"    {printable(w['path'])}  true {w['label']}  P(cat)={w['p_cat']:.3f}" for w in worst]
    if len(report["misclassified"]) > 10:
        lines.append(f"    ... {len(report['misclassified']) - 10} more in the JSON report")
    if report["skipped"]:
        lines.append(f"  skipped: {len(report['skipped'])} file(s), listed in the JSON report")
    return "\n".join(lines)


def default_report(ckpt: str | os.PathLike) -> Path:
    """``evaluation.json`` in the checkpoint's run directory; beside a checkpoint that is not in one."""
    run = RunDirectory.owning(Path(ckpt))
    return run.path / "evaluation.json" if run is not None else Path(ckpt).with_suffix(".evaluation.json")


def evaluate_command(args: dict) -> None:
    """scripts/evaluate.py: score, print, write the JSON report and (``--errors_grid``) the worst mistakes."""
    ckpt = checkpoint_or_latest(args.get("ckpt_path"), args["logs_dir"])
    backend, allowed = args.get("backend") or "torch", allowed_modules(args)
    report, datamodule = evaluate(ckpt, args["data"]["data_dir"], backend=backend, allowed=allowed)
    print(format_report(report))
    path = Path(args.get("report") or default_report(ckpt))
    replaced = " (replaced the previous report)" if path.exists() else ""
    try:
        atomic_write_text(path, json.dumps(report, indent=2))
    except OSError as exc:
        raise ConfigError(
            f"the results above could not be saved to {path} ({exc.strerror or exc}); give --report with a "
            "writable path."
        ) from None
    print(f"  report     {path}{replaced}")
    if args.get("errors_grid"):
        shown = save_errors_grid(report, datamodule, args["errors_grid"])
        print(f"  errors     {args['errors_grid']} ({shown} worst mistakes)")
