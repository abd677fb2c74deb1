"""A model's classes: their names in label order, how many logits they need, and logits as probabilities.

Two classes are the lesson's case: one logit, BCE, P(second class) = sigmoid(logit) (for cat/dog, whose
names in label order are ``("dog", "cat")``, that is P(cat) as the lesson has it). Three or more: one logit
per class, cross-entropy, softmax. Everything after the network (metrics, predictions, exports, the server)
reads probabilities as ``N x C``, one column per class, the same for both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

CATDOG_CLASSES = ("dog", "cat")  # in label order: the lesson's label 1 = cat
TOP5_FROM = 10  # classes from which top-5 accuracy is reported (metrics and evaluate.py)


def is_catdog(classes: Sequence[str]) -> bool:
    return tuple(classes) == CATDOG_CLASSES


def output_count(classes: Sequence[str] | int) -> int:
    """Logits a network gives per image: 1 for two classes (the lesson's), else one per class."""
    count = classes if isinstance(classes, int) else len(classes)
    return 1 if count == 2 else count


def probabilities(logits: torch.Tensor, count: int) -> torch.Tensor:
    """``N x C`` class probabilities from a network's logits (``N`` for two classes, else ``N x C``)."""
    if count == 2:
        p = torch.sigmoid(logits.float())
        return torch.stack([1 - p, p], -1)
    return torch.softmax(logits.float(), -1)


def as_columns(probs: torch.Tensor, count: int) -> torch.Tensor:
    """``N x C`` from what an export computes: ``N`` values of P(second class) for two classes, else ``N x C``."""
    return torch.stack([1 - probs, probs], -1) if count == 2 and probs.dim() == 1 else probs


def probability_fields(classes: Sequence[str]) -> list[str]:
    """The probability columns a prediction file holds: ``p_<class>`` for each class; for two classes the
    second's alone, as the lesson's ``p_cat`` (the first's is one minus it)."""
    return [f"p_{classes[1]}"] if len(classes) == 2 else [f"p_{name}" for name in classes]


def top(row: Sequence[float], classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image's probabilities, most probable first."""
    order = sorted(range(len(classes)), key=lambda i: -row[i])
    return [(classes[i], float(row[i])) for i in order[:k]]


def predicted(row: Sequence[float]) -> int:
    """The most probable class of one image's probabilities; a tie goes to the first (two classes: the second
    only when its probability is above 0.5, as the lesson's threshold)."""
    return max(range(len(row)), key=lambda i: (row[i], -i))


def prediction_text(row: Sequence[float], classes: Sequence[str]) -> str:
    """``probability<TAB>label`` for one image: P(second class) for two classes (P(cat) for the lesson's), else
    the probability of the predicted class."""
    best = predicted(row)
    return f"{row[1] if len(classes) == 2 else row[best]:.4f}\t{classes[best]}"
