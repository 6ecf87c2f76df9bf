"""Classification scores from predicted classes and probabilities, in plain torch.

They compute what torchmetrics' functional classification metrics compute, in the same dtypes and
order of operations (counts as int64, ratios in float32), so their values are the ones earlier
runs logged; tests compare them with torchmetrics and scikit-learn. Importing torchmetrics cost
every run about 2 s (it pulls in scipy.signal and lightning_utilities) for these few lines.
"""

from __future__ import annotations

import torch
from torch import Tensor


def confusion(preds: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    pairs = target.long() * num_classes + preds.long()
    return torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def safe_divide(num: Tensor, denom: Tensor) -> Tensor:
    """num / denom in float32 (unless already floating), 0 where denom is 0."""
    num = num if num.is_floating_point() else num.float()
    denom = denom if denom.is_floating_point() else denom.float()
    return torch.where(denom != 0, num / denom, torch.zeros((), dtype=num.dtype))


def accuracy(preds: Tensor, target: Tensor) -> Tensor:
    """Top-1 accuracy (micro average)."""
    correct = (preds == target).sum()
    return safe_divide(correct, correct + (preds != target).sum())


def recall(matrix: Tensor) -> Tensor:
    """Per-class recall (C,), 0 for classes without samples."""
    tp = matrix.diag()
    return safe_divide(tp, tp + (matrix.sum(1) - tp))


def macro_f1(matrix: Tensor) -> Tensor:
    """F1 averaged over the classes present in labels or predictions."""
    tp = matrix.diag()
    fp, fn = matrix.sum(0) - tp, matrix.sum(1) - tp
    score = safe_divide(2.0 * tp, 2.0 * tp + 1.0 * fn + fp)
    weights = torch.ones_like(score)
    weights[tp + fp + fn == 0] = 0.0
    return safe_divide(weights * score, weights.sum(-1, keepdim=True)).sum(-1)


def quadratic_kappa(matrix: Tensor) -> Tensor:
    """Cohen's kappa with quadratic weights (grades 0..C-1) of a confusion matrix."""
    counts = matrix.float()
    sum0, sum1 = counts.sum(dim=0, keepdim=True), counts.sum(dim=1, keepdim=True)
    expected = sum1 @ sum0 / sum0.sum()
    grades = torch.zeros_like(counts) + torch.arange(counts.shape[0], dtype=counts.dtype)
    weights = torch.pow(grades - grades.T, 2.0)
    return 1 - torch.sum(weights * counts) / torch.sum(weights * expected)


def calibration_error(probs: Tensor, target: Tensor, bins: int) -> Tensor:
    """Top-label expected calibration error (L1) over `bins` equal-width bins."""
    conf, predicted = probs.max(dim=1)
    conf, hits = conf.float(), predicted.eq(target).float()
    edges = torch.linspace(0, 1, bins + 1, dtype=conf.dtype)
    index = torch.bucketize(conf, edges, right=True) - 1
    count = torch.zeros(len(edges), dtype=conf.dtype).scatter_add_(0, index, torch.ones_like(conf))
    conf_bin = torch.nan_to_num(torch.zeros_like(count).scatter_add_(0, index, conf) / count)
    acc_bin = torch.nan_to_num(torch.zeros_like(count).scatter_add_(0, index, hits) / count)
    return torch.sum(torch.abs(acc_bin - conf_bin) * (count / count.sum()))


def binary_auroc(scores: Tensor, truth: Tensor) -> Tensor:
    """Area under the ROC curve (trapezoids over every distinct score); needs both classes in `truth`."""
    order = torch.argsort(scores, descending=True)
    scores, truth = scores[order], truth[order].long()
    distinct = torch.where(scores[1:] - scores[:-1])[0]
    cut = torch.cat([distinct, torch.tensor([truth.numel() - 1])])
    tps = torch.cumsum(truth * 1.0, dim=0)[cut]  # float32, as torchmetrics counts
    fps = 1 + cut - tps
    zero = torch.zeros(1, dtype=tps.dtype)
    tps, fps = torch.cat([zero, tps]), torch.cat([zero, fps])
    return torch.trapz(tps / tps[-1], fps / fps[-1])
