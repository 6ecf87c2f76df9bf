"""Evaluation metrics against scikit-learn, and their degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    recall_score,
    roc_auc_score,
)

from qsight.evaluation import compute_metrics, head_metrics, referable_threshold


def random_case(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]  # better than chance
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def reference_ece(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap = abs(confidence[inside].mean() - (predicted[inside] == labels[inside]).mean())
            total += inside.mean() * gap
    return total


@pytest.mark.parametrize(("n", "classes", "seed"), [(200, 5, 0), (57, 3, 1), (120, 7, 2), (40, 2, 3)])
def test_matches_scikit_learn(n: int, classes: int, seed: int) -> None:
    labels, probs = random_case(n, classes, seed)
    preds = probs.argmax(axis=1)
    m = head_metrics(labels, probs, referable_threshold(classes))
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, preds), abs=1e-6)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds), abs=1e-6)
    assert m["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro"), abs=1e-6)
    qwk = cohen_kappa_score(labels, preds, weights="quadratic", labels=list(range(classes)))
    assert m["qwk"] == pytest.approx(qwk, abs=1e-6)
    recalls = recall_score(labels, preds, average=None, labels=list(range(classes)))
    for k in range(classes):
        assert m[f"recall_c{k}"] == pytest.approx(recalls[k], abs=1e-6)
    assert m["ece"] == pytest.approx(reference_ece(labels, probs), abs=1e-5)
    assert ("referable_auc" in m) == (classes == 5)


def test_referable_dr_metrics() -> None:
    labels, probs = random_case(300, 5, 4)
    m = head_metrics(labels, probs, referable_from=2)
    truth, flagged = labels >= 2, probs.argmax(axis=1) >= 2
    assert m["referable_sensitivity"] == pytest.approx(recall_score(truth, flagged), abs=1e-6)
    assert m["referable_specificity"] == pytest.approx(recall_score(~truth, ~flagged), abs=1e-6)
    assert m["referable_auc"] == pytest.approx(roc_auc_score(truth, probs[:, 2:].sum(axis=1)), abs=1e-6)


def test_names_are_prefixed_by_head_and_referable_is_automatic() -> None:
    labels, five = random_case(50, 5, 5)
    _, three = random_case(50, 3, 5)
    metrics = compute_metrics(labels, {"quantum": five, "ensemble": five})
    assert {"quantum/qwk", "ensemble/accuracy", "ensemble/referable_sensitivity"} <= set(metrics)
    assert "global/referable_auc" not in compute_metrics(labels % 3, {"global": three})
    assert "global/referable_auc" in compute_metrics(labels % 3, {"global": three}, referable_from=1)
    assert "ensemble/referable_auc" not in compute_metrics(labels, {"ensemble": five}, referable_from=None)


def assert_finite(metrics: dict[str, float]) -> None:
    assert metrics, "some metric should always be reported"
    assert all(math.isfinite(v) for v in metrics.values()), metrics


def test_one_class_everywhere() -> None:
    labels = np.full(6, 3)
    probs = np.tile(np.eye(5)[3], (6, 1))
    m = head_metrics(labels, probs, referable_from=2)
    assert_finite(m)
    assert m["accuracy"] == 1.0 and m["recall_c3"] == 1.0
    assert "recall_c0" not in m  # no samples of class 0: undefined, left out
    assert "referable_specificity" not in m and "referable_auc" not in m
    assert m["referable_sensitivity"] == 1.0


def test_class_never_predicted_and_single_sample() -> None:
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.2, 0.8, 0.0]])
    assert_finite(head_metrics(labels, probs))
    single = head_metrics(np.array([1]), np.array([[0.2, 0.5, 0.3]]))
    assert_finite(single)
    assert single["accuracy"] == 1.0


def test_empty_and_invalid_inputs() -> None:
    assert head_metrics(np.array([], dtype=int), np.zeros((0, 4))) == {}
    with pytest.raises(ValueError, match="labels must lie"):
        head_metrics(np.array([0, 4]), np.full((2, 4), 0.25))
    with pytest.raises(ValueError, match="expected labels"):
        head_metrics(np.array([0, 1]), np.full((3, 4), 0.25))


def test_non_finite_probabilities_are_left_out() -> None:
    labels = np.array([0, 1, 1])
    probs = np.array([[np.nan, np.nan], [0.4, 0.6], [0.3, 0.7]])
    assert all(math.isfinite(v) for v in head_metrics(labels, probs).values())


@pytest.mark.parametrize("seed", range(6))
def test_scores_equal_torchmetrics_bit_for_bit(seed: int) -> None:
    """Runs logged torchmetrics' values before qsight computed its own: same values, same dtypes (ties,
    absent classes and one-class inputs included)."""
    import torch
    import torchmetrics.functional.classification as tm

    from qsight.evaluation import scores

    rng = np.random.default_rng(seed)
    for trial in range(40):
        n, c = int(rng.integers(1, 200)), int(rng.integers(2, 7))
        labels, probs = random_case(n, c, seed * 100 + trial)
        if trial % 3 == 0:
            labels = labels % max(1, c - 2)  # classes without samples
        if trial % 4 == 0:
            probs = np.round(probs, 1)  # tied scores
        target, p = torch.from_numpy(labels), torch.from_numpy(probs)
        preds = p.argmax(1)
        matrix = scores.confusion(preds, target, c)
        pairs = [
            (scores.accuracy(preds, target), tm.multiclass_accuracy(preds, target, c, average="micro")),
            (scores.recall(matrix), tm.multiclass_recall(preds, target, c, average=None)),
            (scores.macro_f1(matrix), tm.multiclass_f1_score(preds, target, c, average="macro")),
            (scores.quadratic_kappa(matrix), tm.multiclass_cohen_kappa(preds, target, c, weights="quadratic")),
            (scores.calibration_error(p, target, 15), tm.multiclass_calibration_error(p, target, c, n_bins=15)),
        ]
        truth, score = target >= 1, p[:, 1:].sum(1).clamp(0, 1)
        if truth.any() and not truth.all():
            pairs.append((scores.binary_auroc(score, truth), tm.binary_auroc(score, truth.long())))
        for ours, ref in pairs:
            assert ours.dtype == ref.dtype and torch.equal(ours.nan_to_num(-9), ref.nan_to_num(-9)), (trial, ours, ref)
