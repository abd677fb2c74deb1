"""Seeded, stratified splits: the same images land in the same split on every run with the same seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices ``0..N-1`` into ``len(fractions) + 1`` parts; part k>0 takes ``fractions[k-1]`` of each class.

    Part 0 (training) gets what is left. Each class is shuffled with its own seeded generator, so
    adding images of one class never moves the other class's images between splits.
    """
    labels = np.asarray(labels)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[np.random.default_rng([seed, int(cls)]).permutation(len(members))]
        start = 0
        for k, frac in enumerate(fractions, start=1):
            take = int(round(len(members) * frac))
            parts[k].append(members[start : start + take])
            start += take
        parts[0].append(members[start:])
    return [np.sort(np.concatenate(p)) for p in parts]
