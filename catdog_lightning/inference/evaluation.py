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
    binary_auroc,
    binary_f1_score,
    binary_precision,
    binary_recall,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from ..allow_list import allowed_modules
from ..classes import TOP5_FROM, probability_fields
from ..data import CatDogDataModule
from ..data.scan import printable
from ..errors import ConfigError, DataError
from ..storage.atomic import atomic_write_text
from ..storage.checkpoints import read_checkpoint, saved_classes
from ..storage.runs import RunDirectory
from ..training.drawing import caption_grid
from ..training.stages import checkpoint_data, evaluator, own_data, predicted_probabilities
from ..training.tensorboard import prediction_captions
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
    if data_dir is None:
        return own_data(saved, {"augment": False})
    datamodule = checkpoint_data(saved, {"augment": False}, own_data=False)
    datamodule.setup_test_folder(evaluation_folder(data_dir), saved_classes(saved))
    return datamodule


def _where(datamodule: CatDogDataModule, data_dir: str | None) -> str:
    if data_dir is not None:
        return str(evaluation_folder(data_dir))
    return datamodule.place("test")


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
    return scores(probs, test.labels, test.paths, list(datamodule.class_names)) | {
        "checkpoint": str(ckpt_path),
        "backend": backend,
        "folder": _where(datamodule, data_dir),
        "skipped": [{"path": path, "reason": reason} for path, reason in datamodule.test_skipped],
    }, datamodule


def scores(probs: torch.Tensor, labels: torch.Tensor, paths: list[str], classes: list[str]) -> dict:
    """What evaluate.py reports for ``N x C`` probabilities: accuracy (the share of images right), macro F1 and
    AUROC (each class weighs the same; binary for two classes, with precision and recall of the second class),
    top-5 accuracy from ten classes on, each class's photos, accuracy (its recall), precision and F1, the
    confusion matrix, the three most confused pairs and the mistakes, worst first (the lowest probability of the
    true class)."""
    count = len(classes)
    matrix = multiclass_confusion_matrix(probs, labels, count)
    present = len(set(labels.tolist()))
    report = {
        "classes": classes,
        "images": len(labels),
        "accuracy": float(multiclass_accuracy(probs, labels, count, average="micro")),
        "f1": float(multiclass_f1_score(probs, labels, count, average="macro")) if count > 2 else None,
        # AUROC ranks one class against the rest: with photos of one class only there is nothing to rank (None).
        "auroc": None if present < 2 else float(
            binary_auroc(probs[:, 1], labels) if count == 2 else multiclass_auroc(probs, labels, count)
        ),
    }  # fmt: skip
    if count == 2:
        second = classes[1]
        report |= {
            "precision": float(binary_precision(probs[:, 1], labels)),
            "recall": float(binary_recall(probs[:, 1], labels)),
            "positive": second,
        }
        report["f1"] = float(binary_f1_score(probs[:, 1], labels))
    if count >= TOP5_FROM:
        report["top5_accuracy"] = float(multiclass_accuracy(probs, labels, count, top_k=5, average="micro"))
    recall = multiclass_recall(probs, labels, count, average=None).tolist()
    precision = multiclass_precision(probs, labels, count, average=None).tolist()
    f1 = multiclass_f1_score(probs, labels, count, average=None).tolist()
    per_class = matrix.sum(1).tolist()
    report["per_class"] = [
        {"class": name, "images": per_class[i], "accuracy": recall[i], "precision": precision[i], "f1": f1[i]}
        for i, name in enumerate(classes)
    ]
    report["confusion_matrix"] = {
        "rows": [f"true {name}" for name in classes],
        "columns": [f"predicted {name}" for name in classes],
        "counts": matrix.tolist(),
    }
    pairs = [
        (int(matrix[i, j] + matrix[j, i]), classes[i], classes[j]) for i in range(count) for j in range(i + 1, count)
    ]
    report["most_confused"] = [
        {"classes": [a, b], "mistakes": n} for n, a, b in sorted(pairs, key=lambda t: -t[0])[:3] if n > 0
    ]
    fields = probability_fields(classes)
    predicted = probs.argmax(1)
    wrong = [
        {
            "path": paths[row],
            "label": classes[int(labels[row])],
            "predicted": classes[int(predicted[row])],
            **{field: float(probs[row, classes.index(field[2:])]) for field in fields},
            "p_true": float(probs[row, labels[row]]),
            "row": row,
        }
        for row in torch.nonzero(predicted != labels).flatten().tolist()
    ]
    report["misclassified"] = sorted(wrong, key=lambda w: w["p_true"])
    return report


def save_errors_grid(report: dict, datamodule: CatDogDataModule, path: str | os.PathLike, count: int = 24) -> int:
    """A picture of the ``count`` worst mistakes, as the model saw them, captioned with the true class and the
    prediction (as the TensorBoard grid captions them)."""
    worst = report["misclassified"][:count]
    classes = report["classes"]
    rows = torch.tensor([w["row"] for w in worst], dtype=torch.long)
    pictures = [img.permute(1, 2, 0).numpy() for img in datamodule.test_set.take(rows)] if worst else []
    probs = torch.zeros(len(worst), len(classes))
    for i, w in enumerate(worst):  # the two probabilities a caption shows: the true class's and the predicted's
        probs[i, classes.index(w["label"])] = w["p_true"]
        other = 1 - w["p_true"] if len(classes) == 2 else w["p_" + w["predicted"]]
        probs[i, classes.index(w["predicted"])] = other
    labels = torch.tensor([classes.index(w["label"]) for w in worst], dtype=torch.long)
    captions, _ = prediction_captions(probs, labels, classes)
    caption_grid(pictures, captions, [False] * len(worst), columns=min(8, max(1, len(worst)))).save(path)
    return len(worst)


def format_report(report: dict) -> str:
    classes = report["classes"]
    on_backend = f" ({report['backend']})" if report.get("backend", "torch") != "torch" else ""
    auroc = "undefined (photos of one class only)" if report["auroc"] is None else f"{report['auroc']:.4f}"
    lines = [
        f"Evaluated {report['checkpoint']}{on_backend} on {report['images']} images in {report['folder']}",
        f"  accuracy   {report['accuracy']:.4f}   (the share of all images right)",
    ]
    if len(classes) == 2:
        second = classes[1]
        lines += [
            f"  precision  {report['precision']:.4f}   (of images called {second}, the share that are {second})",
            f"  recall     {report['recall']:.4f}   (of {second} images, the share found)",
            f"  f1         {report['f1']:.4f}",
            f"  auroc      {auroc}",
        ]
    else:
        lines += [f"  macro f1   {report['f1']:.4f}   (each class's F1, averaged: every class weighs the same)",
                  f"  auroc      {auroc}   (macro, each class against the rest)"]  # fmt: skip
        if "top5_accuracy" in report:
            lines.append(f"  top-5      {report['top5_accuracy']:.4f}   (the true class among the five most probable)")
        width = max(10, *(len(name) for name in classes))
        lines.append(f"  {'class':<{width}}  images  accuracy  precision      f1")
        lines += [
            f"  {printable(c['class']):<{width}}  {c['images']:>6}  {c['accuracy']:>8.4f}  {c['precision']:>9.4f}  "
            f"{c['f1']:>6.4f}"
            for c in report["per_class"]
        ]
        pairs = ", ".join(
            f"{a}/{b} {n}" for p in report["most_confused"] for (a, b), n in [(p["classes"], p["mistakes"])]
        )
        lines.append(f"  most confused: {pairs or 'none'}")
    width = max(8, *(len(name) + 10 for name in classes))
    heads = "".join(("predicted " + c).rjust(width) for c in classes)
    lines.append(f"  confusion matrix  {heads}")
    for name, row in zip(classes, report["confusion_matrix"]["counts"], strict=True):
        lines.append("    " + ("true " + name).ljust(16) + "".join(str(n).rjust(width) for n in row))
    lines.append(f"  misclassified: {len(report['misclassified'])} (worst first)")
    worst = report["misclassified"][:10]
    if len(classes) == 2:
        lines += [
            f"    {printable(w['path'])}  true {w['label']}  P({classes[1]})={w[f'p_{classes[1]}']:.3f}" for w in worst
        ]
    else:
        for w in worst:
            shown = w["p_" + w["predicted"]]
            lines.append(f"    {printable(w['path'])}  true {w['label']}  predicted {w['predicted']} "
                         f"P({w['predicted']})={shown:.3f}")  # fmt: skip
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
