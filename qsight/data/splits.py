"""Stratified seeded train/validation splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: each class split by ``val_fraction`` (rounded), shuffled by ``seed``.

    A class with at least two samples keeps at least one on each side; a
    class with one sample stays in training. Both lists are sorted.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be in (0, 1)")
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([seed, 0x5EED])
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = 0 if len(idx) < 2 else min(max(round(len(idx) * val_fraction), 1), len(idx) - 1)
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return sorted(train), sorted(val)
