"""Bootstrap confidence intervals of the classification metrics, vectorised over resamples.

A resample draws ``N`` of the ``N`` samples with replacement; it is held as a row of counts
(how often each sample was drawn), so every metric of every resample comes from a few matrix
products: weighted confusion matrices (accuracy, balanced accuracy, macro F1, QWK, recalls,
referable sensitivity/specificity), weighted calibration bins (ECE) and weighted rank sums
(referable AUC). The metrics mean what :mod:`qsight.evaluation.metrics` says they mean; on the
unresampled data they equal its values (a test holds them to it).

Every head is scored on the *same* resamples, so differences between two heads are paired:
the interval of ``qwk(a) − qwk(b)`` reflects the disagreement of the two heads, not the
sampling noise each has on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from qsight.evaluation.metrics import ECE_BINS, referable_threshold

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
MIN_DEFINED = 0.9  # an interval needs the metric defined on at least this share of the resamples
_CELLS_PER_CHUNK = 4_000_000  # resamples × samples held at once


@dataclass(frozen=True)
class PairedDifference:
    """``metric(a) − metric(b)`` on the full data and its interval over the shared resamples."""

    difference: float
    interval: tuple[float, float] | None


@dataclass(frozen=True)
class Bootstrap:
    """Intervals keyed ``<head>/<metric>`` and paired differences keyed ``<a>-vs-<b>``."""

    intervals: dict[str, tuple[float, float]]
    paired: dict[str, PairedDifference] = field(default_factory=dict)
    resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) float64: how often each sample is drawn in each resample (rows sum to n)."""
    draws = rng.integers(0, n, size=(resamples, n))
    offsets = (np.arange(resamples) * n)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * n)
    return counts.reshape(resamples, n).astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN where den is 0."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    return _ratio(total, finite.sum(axis=axis).astype(np.float64))


def confusion_metrics(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of weighted confusion matrices ``(B, C, C)`` (row: true class), one value per matrix."""
    num_classes = conf.shape[-1]
    total = conf.sum(axis=(1, 2))
    tp = np.diagonal(conf, axis1=1, axis2=2)
    support, predicted = conf.sum(axis=2), conf.sum(axis=1)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)  # classes neither present nor predicted: left out
    grades = np.arange(num_classes, dtype=np.float64)
    w = (grades[:, None] - grades[None, :]) ** 2
    observed = (conf * w).sum(axis=(1, 2))
    expected = _ratio(np.einsum("bi,bj,ij->b", support, predicted, w), total)
    out = {
        "accuracy": _ratio(tp.sum(axis=1), total),
        "balanced_accuracy": _nanmean(recall, axis=1),
        "macro_f1": _nanmean(f1, axis=1),
        "qwk": 1.0 - _ratio(observed, expected),
    }
    out |= {f"recall_c{k}": recall[:, k] for k in range(num_classes)}
    return out


def _ece(weights: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Top-label ECE (ECE_BINS equal-width bins, L1) of each weighted resample."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    bins = np.searchsorted(edges, conf, side="right") - 1  # torch.bucketize(right=True) - 1
    onehot = np.zeros((len(conf), ECE_BINS + 1))
    onehot[np.arange(len(conf)), bins] = 1.0
    gap = weights @ (onehot * (correct - conf)[:, None])
    return _ratio(np.abs(gap).sum(axis=1), weights.sum(axis=1))


def _auc(weights: np.ndarray, score: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Weighted ROC AUC (ties count half) of each resample: Σ_pos w·(neg weight below + ½ tied) / (W+ · W−)."""
    order = np.argsort(score, kind="stable")
    ordered = score[order]
    neg = weights[:, order] * (~truth[order]).astype(np.float64)
    below = np.concatenate([np.zeros((len(weights), 1)), np.cumsum(neg, axis=1)], axis=1)
    lo = np.searchsorted(ordered, score, side="left")
    hi = np.searchsorted(ordered, score, side="right")
    credit = below[:, lo] + 0.5 * (below[:, hi] - below[:, lo])
    pos_w = weights * truth.astype(np.float64)
    return _ratio((pos_w * credit).sum(axis=1), pos_w.sum(axis=1) * neg.sum(axis=1))


def _referable(weights: np.ndarray, probs: np.ndarray, labels: np.ndarray, start: int) -> dict[str, np.ndarray]:
    truth = labels >= start
    flagged = probs.argmax(axis=1) >= start
    score = np.clip(probs[:, start:].sum(axis=1), 0.0, 1.0)
    columns = np.stack([flagged & truth, truth, ~flagged & ~truth, ~truth], axis=1).astype(np.float64)
    tp, pos, tn, neg = (weights @ columns).T  # one BLAS product (a bool operand would not use BLAS)
    return {
        "referable_sensitivity": _ratio(tp, pos),
        "referable_specificity": _ratio(tn, neg),
        "referable_auc": _auc(weights, score, truth),
    }


def resampled_metrics(
    labels: np.ndarray, probs: np.ndarray, weights: np.ndarray, referable_from: int | None = None
) -> dict[str, np.ndarray]:
    """Every metric of one head on each weighted resample: ``weights`` (B, N) → name → (B,) (NaN: undefined)."""
    num_classes = probs.shape[1]
    cell = labels * num_classes + probs.argmax(axis=1)
    onehot = np.zeros((len(labels), num_classes * num_classes))
    onehot[np.arange(len(labels)), cell] = 1.0
    conf = (weights @ onehot).reshape(-1, num_classes, num_classes)
    out = confusion_metrics(conf)
    out["ece"] = _ece(weights, probs, labels)
    if referable_from is not None and 0 < referable_from < num_classes:
        out |= _referable(weights, probs, labels, referable_from)
    return out


def interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float] | None:
    """The percentile interval of the defined values; None when too few resamples define the metric."""
    finite = values[np.isfinite(values)]
    if values.size == 0 or finite.size < MIN_DEFINED * values.size:
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap(
    labels: np.ndarray,
    probs: Mapping[str, np.ndarray],
    point: Mapping[str, float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    paired_metric: str = "qwk",
) -> Bootstrap:
    """Intervals of every ``<head>/<metric>`` in ``point`` and paired ``paired_metric`` differences.

    ``point`` holds the metrics on the full data (``compute_metrics``); intervals are given for
    those keys only. Every head uses the same resamples, drawn from ``seed``.
    """
    y = np.asarray(labels, dtype=np.int64)
    heads = {h: np.asarray(p, dtype=np.float64) for h, p in probs.items()}
    values: dict[str, list[np.ndarray]] = {}
    rng = np.random.default_rng([seed, 0xB0075])
    chunk = max(1, min(resamples, _CELLS_PER_CHUNK // max(1, len(y))))
    for start in range(0, resamples, chunk):
        weights = resample_counts(len(y), min(chunk, resamples - start), rng)
        for head, p in heads.items():
            for name, v in resampled_metrics(y, p, weights, referable_threshold(p.shape[1])).items():
                values.setdefault(f"{head}/{name}", []).append(v)
    series = {k: np.concatenate(v) for k, v in values.items()}
    intervals = {k: ci for k in point if k in series and (ci := interval(series[k], level)) is not None}
    paired = {}
    for a, b in itertools.combinations(heads, 2):
        ka, kb = f"{a}/{paired_metric}", f"{b}/{paired_metric}"
        if ka in point and kb in point and ka in series and kb in series:
            diff = series[ka] - series[kb]
            paired[f"{a}-vs-{b}"] = PairedDifference(point[ka] - point[kb], interval(diff, level))
    return Bootstrap(intervals, paired, resamples, level)
