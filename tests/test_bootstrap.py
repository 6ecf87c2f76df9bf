"""Bootstrap intervals: equal to the metrics on the data, cover the truth, seeded, paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from qsight.evaluation.bootstrap import (
    bootstrap,
    confusion_metrics,
    interval,
    resample_counts,
    resampled_metrics,
)
from qsight.evaluation.metrics import compute_metrics, head_metrics

C = 5


def _probs(rng: np.random.Generator, labels: np.ndarray, skill: float) -> np.ndarray:
    logits = rng.normal(size=(len(labels), C)) + skill * np.eye(C)[labels] * rng.random((len(labels), 1))
    p = np.exp(logits)
    return np.asarray(p / p.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("case", ["plain", "absent class", "tied scores"])
def test_unresampled_values_equal_the_metrics(case: str) -> None:
    rng = np.random.default_rng(len(case))
    labels = rng.choice(C, 300, p=[0.5, 0.1, 0.25, 0.05, 0.1])
    if case == "absent class":
        labels[labels == 3] = 2
    probs = _probs(rng, labels, 2.5)
    if case == "tied scores":
        probs = np.round(probs, 1) + 1e-3
        probs /= probs.sum(axis=1, keepdims=True)
    want = head_metrics(labels, probs, referable_from=2)
    got = resampled_metrics(labels, probs, np.ones((1, len(labels))), referable_from=2)
    assert set(want) <= set(got)
    for name, value in want.items():
        assert got[name][0] == pytest.approx(value, abs=2e-6), name  # torchmetrics computes in float32
    undefined = {k for k, v in got.items() if k not in want}
    assert all(np.isnan(got[k][0]) for k in undefined)  # e.g. the recall of the absent class


def _population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions of a classifier that is right 70 % of the time, off by one grade otherwise."""
    labels = rng.integers(0, C, n)
    step = rng.choice([-1, 1], n)
    wrong = rng.random(n) < 0.3
    preds = np.clip(np.where(wrong, labels + step, labels), 0, C - 1)
    return labels, preds


def _confusions(labels: np.ndarray, preds: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    onehot = np.zeros((len(labels), C * C))
    onehot[np.arange(len(labels)), labels * C + preds] = 1.0
    return confusion_metrics((weights @ onehot).reshape(-1, C, C))


def test_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    pop_labels, pop_preds = _population(rng, 400_000)
    truth = {k: float(v[0]) for k, v in _confusions(pop_labels, pop_preds, np.ones((1, len(pop_labels)))).items()}
    trials, hits = 200, {"accuracy": 0, "qwk": 0}
    for _ in range(trials):
        pick = rng.integers(0, len(pop_labels), 200)
        series = _confusions(pop_labels[pick], pop_preds[pick], resample_counts(200, 1000, rng))
        for name in hits:
            ci = interval(series[name])
            assert ci is not None
            hits[name] += ci[0] <= truth[name] <= ci[1]
    for name, n in hits.items():
        assert 0.88 <= n / trials <= 0.995, (name, n / trials)


def _heads(seed: int = 3, n: int = 250) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(C, n, p=[0.5, 0.1, 0.25, 0.05, 0.1])
    a = _probs(rng, labels, 3.0)
    b = np.clip(a + rng.normal(scale=0.03, size=a.shape), 1e-6, None)  # b: a, slightly perturbed
    return labels, {"a": a, "b": b / b.sum(axis=1, keepdims=True), "ensemble": _probs(rng, labels, 3.0)}


def test_seeded_reproducible_and_bracketing_the_value() -> None:
    labels, probs = _heads()
    point = compute_metrics(labels, probs)
    first = bootstrap(labels, probs, point, resamples=1000, seed=1)
    assert first == bootstrap(labels, probs, point, resamples=1000, seed=1)
    other = bootstrap(labels, probs, point, resamples=1000, seed=2)
    assert other.intervals["a/qwk"] != first.intervals["a/qwk"]
    assert set(first.intervals) <= set(point) and "a/qwk" in first.intervals and "ensemble/ece" in first.intervals
    for key, (low, high) in first.intervals.items():
        assert low <= high, key
        if not key.endswith("ece"):  # ECE's bootstrap is biased upward: its interval may sit above the value
            assert low - 1e-9 <= point[key] <= high + 1e-9, key
    assert list(first.paired) == ["a-vs-b", "a-vs-ensemble", "b-vs-ensemble"]
    assert first.paired["a-vs-b"].difference == pytest.approx(point["a/qwk"] - point["b/qwk"])


def test_paired_differences_are_narrower_than_unpaired() -> None:
    labels, probs = _heads()
    point = compute_metrics(labels, probs)
    paired = bootstrap(labels, probs, point, resamples=1000, seed=5).paired["a-vs-b"].interval
    assert paired is not None
    weights_a = resample_counts(len(labels), 1000, np.random.default_rng(11))
    weights_b = resample_counts(len(labels), 1000, np.random.default_rng(12))
    qwk_a = resampled_metrics(labels, probs["a"], weights_a)["qwk"]
    qwk_b = resampled_metrics(labels, probs["b"], weights_b)["qwk"]
    unpaired = interval(qwk_a - qwk_b)
    assert unpaired is not None
    assert (paired[1] - paired[0]) < 0.5 * (unpaired[1] - unpaired[0])


def test_resample_counts_and_undefined_metrics() -> None:
    counts = resample_counts(7, 50, np.random.default_rng(0))
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all() and (counts >= 0).all()
    assert interval(np.array([np.nan] * 5 + [1.0] * 5)) is None  # defined in too few resamples
    assert interval(np.array([])) is None
    low, high = interval(np.arange(101.0)) or (0.0, 0.0)
    assert (low, high) == pytest.approx((2.5, 97.5))
