"""Class-diverse, deterministic choice of validation samples to explain."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def choose_samples(labels: Sequence[int] | np.ndarray, n: int, seed: int = 0) -> list[int]:
    """Indices of ``n`` samples (fewer if there are fewer), taken class by class.

    Classes are visited in ascending order, one sample each per round, so every
    class present is represented before any class repeats. Within a class the
    order is a shuffle fixed by ``seed``: the same labels and seed give the same
    indices on every call (and so the same images every epoch).
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < min(n, len(labels)):
        chosen += [int(q[depth]) for q in queues if depth < len(q)][: n - len(chosen)]
        depth += 1
    return chosen


def lesion_samples(labels: Sequence[int] | np.ndarray, lesion: Sequence[bool] | np.ndarray, n: int,
                   seed: int = 0) -> list[int]:
    """Indices of ``n`` samples with a lesion (fewer if there are fewer), class-diverse as in `choose_samples`."""
    bearing = np.flatnonzero(np.asarray(lesion, dtype=bool))
    picked = choose_samples(np.asarray(labels, dtype=np.int64)[bearing], n, seed=seed)
    return sorted(int(bearing[i]) for i in picked)
