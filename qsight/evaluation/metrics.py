"""Classification metrics of one head's class probabilities (computed by :mod:`qsight.evaluation.scores`).

Names (per head; :func:`compute_metrics` prefixes ``<head>/``):

``accuracy``                top-1 accuracy
``balanced_accuracy``       mean recall over the classes present in the labels
``macro_f1``                F1 averaged over the classes present in labels or predictions
``qwk``                     quadratic weighted Cohen's kappa over grades ``0..C-1``
``ece``                     expected calibration error (top-label, 15 equal-width bins, L1)
``recall_c<k>``             recall of class ``k`` (only for classes present in the labels)
``referable_sensitivity``   DR label sets only (5 classes): "grade >= 2" is the positive class,
``referable_specificity``   predicted referable when the argmax grade is >= 2, the AUC scored
``referable_auc``           with ``P(grade >= 2)`` (the summed probabilities of those grades)

A metric that is undefined for the data at hand (kappa with a single class everywhere,
AUC with one referable status, recall of a class without samples, any non-finite value)
is left out rather than reported as NaN. Nothing assumes five classes except the
referable-DR metrics, which are only computed when ``referable_from`` applies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from qsight.evaluation import scores

DR_NUM_CLASSES = 5
DR_REFERABLE_FROM = 2
ECE_BINS = 15


def referable_threshold(num_classes: int) -> int | None:
    """The first referable grade for DR label sets (five grades), else ``None``."""
    return DR_REFERABLE_FROM if num_classes == DR_NUM_CLASSES else None


def check_inputs(labels: np.ndarray, probs: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``labels`` (N,) and ``probs`` (N, C) fit together."""
    if labels.ndim != 1 or probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"expected labels (N,) and probs (N, C); got {labels.shape} and {probs.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}; got {labels.min()}..{labels.max()}")


def head_metrics(labels: np.ndarray, probs: np.ndarray, referable_from: int | None = None) -> dict[str, float]:
    """All metrics of one head: ``labels`` (N,) class indices, ``probs`` (N, C) probabilities."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    check_inputs(labels, probs)
    if labels.size == 0:
        return {}
    num_classes = probs.shape[1]
    target = torch.from_numpy(labels)
    probs_t = torch.from_numpy(probs)
    preds = probs_t.argmax(dim=1)
    support = np.bincount(labels, minlength=num_classes)
    matrix = scores.confusion(preds, target, num_classes)
    recall = scores.recall(matrix)
    out = {
        "accuracy": scores.accuracy(preds, target),
        "balanced_accuracy": recall[torch.from_numpy(support > 0)].mean(),
        "macro_f1": scores.macro_f1(matrix),
        "qwk": scores.quadratic_kappa(matrix),
        "ece": scores.calibration_error(probs_t, target, ECE_BINS),
    }
    values = {name: float(value) for name, value in out.items()}
    values |= {f"recall_c{k}": float(recall[k]) for k in range(num_classes) if support[k] > 0}
    if referable_from is not None and 0 < referable_from < num_classes:
        values |= _referable(target, probs_t, preds, referable_from)
    return {name: value for name, value in values.items() if math.isfinite(value)}


def _referable(target: torch.Tensor, probs: torch.Tensor, preds: torch.Tensor, start: int) -> dict[str, float]:
    """Sensitivity/specificity/AUC of "grade >= start", each only where defined."""
    truth = target >= start
    flagged = preds >= start
    positives, negatives = int(truth.sum()), int((~truth).sum())
    out: dict[str, float] = {}
    if positives:
        out["referable_sensitivity"] = float((flagged & truth).sum()) / positives
    if negatives:
        out["referable_specificity"] = float((~flagged & ~truth).sum()) / negatives
    if positives and negatives:
        score = probs[:, start:].sum(dim=1).clamp(0.0, 1.0)
        out["referable_auc"] = float(scores.binary_auroc(score, truth))
    return out


def compute_metrics(
    labels: np.ndarray,
    probs: Mapping[str, np.ndarray],
    referable_from: int | str | None = "auto",
) -> dict[str, float]:
    """Metrics of every head, named ``<head>/<metric>``.

    ``referable_from="auto"`` uses grade 2 for five-class label sets and skips the
    referable-DR metrics otherwise; an int forces it, ``None`` turns it off.
    """
    metrics: dict[str, float] = {}
    for head, head_probs in probs.items():
        start = referable_threshold(head_probs.shape[1]) if referable_from == "auto" else referable_from
        if isinstance(start, str):
            raise ValueError(f"referable_from must be 'auto', an int or None; got {start!r}")
        for name, value in head_metrics(labels, head_probs, start).items():
            metrics[f"{head}/{name}"] = value  # the split is prefixed by the caller (metric_names.prefixed)
    return metrics
