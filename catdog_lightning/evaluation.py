"""Score a trained model on a labelled folder: metrics, confusion matrix, and the mistakes themselves."""

from __future__ import annotations

import os
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

from .data.decode import decode_image
from .data.scan import CAT, scan_labelled_folder
from .errors import DataError
from .inference import Classifier
from .visuals import caption_grid


def evaluation_folder(data_dir: str | os.PathLike) -> Path:
    """``<data_dir>/test`` when there is one (a training folder), else ``data_dir`` itself."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data.data_dir {data_dir} does not exist; point it at a folder of labelled photos.")
    return data_dir / "test" if (data_dir / "test").is_dir() else data_dir


def evaluate_folder(classifier: Classifier, folder: str | os.PathLike) -> dict:
    """Accuracy, precision, recall, F1, AUROC, confusion matrix and misclassified files (worst first)."""
    scan = scan_labelled_folder(folder)
    predictions = classifier.predict([f.path for f in scan.files])
    scored = [(p, f.label) for p, f in zip(predictions, scan.files, strict=True) if p.p_cat is not None]
    if not scored:
        raise DataError(f"None of the {len(scan.files)} images in {folder} could be read.")
    probs = torch.tensor([p.p_cat for p, _ in scored])
    labels = torch.tensor([y for _, y in scored])
    tn, fp, fn, tp = binary_confusion_matrix(probs, labels).flatten().tolist()
    wrong = [
        {"path": p.path, "label": "cat" if y == CAT else "dog", "p_cat": p.p_cat}
        for p, y in scored
        if (p.p_cat > 0.5) != (y == CAT)
    ]
    wrong.sort(key=lambda w: abs((w["label"] == "cat") - w["p_cat"]), reverse=True)
    return {
        "folder": str(folder),
        "images": len(scored),
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
        "skipped": [{"path": p, "reason": "neither cat nor dog in its folder or name"} for p in scan.unlabelled]
        + [{"path": p.path, "reason": p.error} for p in predictions if p.p_cat is None]
        + [{"path": p, "reason": "cannot be read"} for p in scan.unreadable],
    }


def save_errors_grid(report: dict, path: str | os.PathLike, count: int = 24) -> int:
    """A picture of the ``count`` worst mistakes, captioned with the true label and P(cat). Returns how many."""
    worst = report["misclassified"][:count]
    pictures = [decode_image(w["path"], 128) for w in worst]
    captions = [f"{w['label']} P(cat)={w['p_cat']:.2f}" for w in worst]
    caption_grid(pictures, captions, [False] * len(worst), columns=min(8, max(1, len(worst)))).save(path)
    return len(worst)


def format_report(report: dict, checkpoint: str) -> str:
    (tn, fp), (fn, tp) = report["confusion_matrix"]["counts"]
    lines = [
        f"Evaluated {checkpoint} on {report['images']} images in {report['folder']}",
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
