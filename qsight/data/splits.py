"""Seeded train/validation/test splits: stratified by class, optionally grouped (e.g. by patient)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

_VAL_STREAM = 0x5EED
_TEST_STREAM = 0x7E57
_GROUP_STREAM = 0x6209


def stratified_split(
    labels: Sequence[int], val_fraction: float, seed: int, *, stream: int = _VAL_STREAM
) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: each class split by ``val_fraction`` (rounded), shuffled by ``seed``.

    A class with at least two samples keeps at least one on each side; a
    class with one sample stays in training. Both lists are sorted.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be in (0, 1)")
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([seed, stream])
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = 0 if len(idx) < 2 else min(max(round(len(idx) * val_fraction), 1), len(idx) - 1)
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return sorted(train), sorted(val)


def holdout_split(
    labels: Sequence[int],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    groups: Sequence[Hashable] | None = None,
) -> tuple[list[int], list[int], list[int]]:
    """Indices ``(train, val, test)``, each sorted; a fraction of 0 leaves that split empty.

    Without ``groups`` each class is split on its own (the test split first, on its own
    seed stream, then validation from the rest): with ``test_fraction = 0`` the result is
    exactly :func:`stratified_split`'s. With ``groups`` (one id per sample, e.g. a patient)
    whole groups are assigned, so no group is on two sides; see :func:`grouped_split`.
    """
    _check_fractions(val_fraction, test_fraction)
    if groups is not None:
        return grouped_split(labels, groups, val_fraction, test_fraction, seed)
    index = list(range(len(labels)))
    test: list[int] = []
    if test_fraction > 0:
        keep, held = stratified_split(labels, test_fraction, seed, stream=_TEST_STREAM)
        index, test = keep, held
    val: list[int] = []
    train = index
    if val_fraction > 0:
        rest = [labels[i] for i in index]
        tr, va = stratified_split(rest, val_fraction / (1.0 - test_fraction), seed)
        train, val = [index[i] for i in tr], [index[i] for i in va]
    return sorted(train), sorted(val), sorted(test)


def grouped_split(
    labels: Sequence[int],
    groups: Sequence[Hashable],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[int], list[int], list[int]]:
    """``(train, val, test)`` indices with every group wholly on one side.

    Groups are stratified by their most frequent label (ties: the lowest) and the fractions
    count groups: in a stratum of ``n`` groups, ``round(n · fraction)`` go to test and to
    validation, at least one each when the stratum has enough groups, and at least one
    stays in training.
    """
    _check_fractions(val_fraction, test_fraction)
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} group ids for {len(labels)} labels")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    names = list(members)
    y = np.asarray(labels, dtype=np.int64)
    strata = np.array([int(np.bincount(y[members[g]]).argmax()) for g in names], dtype=np.int64)
    rng = np.random.default_rng([seed, _GROUP_STREAM])
    sides: tuple[list[int], list[int], list[int]] = ([], [], [])
    for c in np.unique(strata):
        chosen = rng.permutation(np.flatnonzero(strata == c))
        n_test = _share(len(chosen), test_fraction, reserve=1)
        n_val = _share(len(chosen) - n_test, val_fraction, reserve=1, whole=len(chosen))
        for rank, g in enumerate(chosen):
            side = 2 if rank < n_test else 1 if rank < n_test + n_val else 0
            sides[side].extend(members[names[int(g)]])
    train, val, test = sides
    return sorted(train), sorted(val), sorted(test)


def shared_groups(*splits: Sequence[Hashable]) -> list[Hashable]:
    """Group ids found in more than one of ``splits`` (in first-seen order)."""
    seen: dict[Hashable, int] = {}
    shared: dict[Hashable, None] = {}
    for k, split in enumerate(splits):
        for g in split:
            if seen.setdefault(g, k) != k:
                shared[g] = None
    return list(shared)


def _share(available: int, fraction: float, reserve: int, whole: int | None = None) -> int:
    """``round(whole · fraction)`` items out of ``available`` (at least one when ``fraction > 0``),
    leaving ``reserve`` behind; 0 when that is impossible."""
    if fraction <= 0 or available <= reserve:
        return 0
    return min(max(round((whole or available) * fraction), 1), available - reserve)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError("val_fraction and test_fraction must be in [0, 1) with a sum below 1")
