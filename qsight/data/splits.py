"""Stratified seeded splits, class weights and the class-balancing sampler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch.utils.data import WeightedRandomSampler


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


def class_counts(labels: Sequence[int], num_classes: int) -> list[int]:
    """How many samples each class has."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    return [int(c) for c in counts]


def class_weights(labels: Sequence[int], num_classes: int) -> list[float]:
    """Inverse-frequency loss weights ``n / (k * n_c)`` (1.0 each when balanced; 0.0 for absent classes)."""
    counts = np.asarray(class_counts(labels, num_classes), dtype=np.float64)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w.tolist()


def sample_weights(labels: Sequence[int], num_classes: int) -> list[float]:
    """Per-sample drawing weights that make every present class equally likely."""
    w = class_weights(labels, num_classes)
    return [w[int(y)] for y in labels]


def weighted_sampler(labels: Sequence[int], num_classes: int, seed: int) -> WeightedRandomSampler:
    """A seeded ``WeightedRandomSampler`` drawing ``len(labels)`` samples with replacement, class-balanced."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    gen = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(sample_weights(labels, num_classes), len(labels), replacement=True, generator=gen)
