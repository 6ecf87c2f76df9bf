"""The held-out test split, evaluated once at the end of a run on the model the run ends with.

Every head is scored (the ensemble combines the heads of the last stage, as the run ends),
with bootstrap intervals over the test samples and paired QWK differences between every two
heads (``qsight.evaluation.bootstrap``). Written to ``visualizations/test/`` and the sinks;
:func:`holdout_summary` gives summary.json's ``test``, ``test_ci`` and ``test_paired``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from qsight.data.base import DataBundle
from qsight.evaluation import Artifact, EvalReport, evaluate, write_report
from qsight.evaluation.bootstrap import Bootstrap, bootstrap
from qsight.evaluation.intervals import interval_entries, paired_entries, write_intervals, write_paired
from qsight.metric_names import prefixed
from qsight.models.hybrid import HybridModel
from qsight.models.output import ModelOutput
from qsight.runs.layout import INTERVALS, PAIRED, RunLayout
from qsight.sinks.fanout import SinkSet
from qsight.training.loop import predict

log = logging.getLogger("qsight.training")

SPLIT = "test"


@dataclass(frozen=True)
class HoldoutResult:
    """The test split's evaluation and its bootstrap."""

    report: EvalReport
    boot: Bootstrap
    seconds: float  # the bootstrap's wall time


class _EveryHead(nn.Module):
    """Every head's logits; the ensemble of ``ensemble_heads`` (the heads the run ended with)."""

    def __init__(self, model: HybridModel, ensemble_heads: Sequence[str]) -> None:
        super().__init__()
        self.model, self.ensemble_heads = model, list(ensemble_heads)

    def forward(self, images: Tensor) -> ModelOutput:
        out: ModelOutput = self.model(images)
        ensemble = self.model.combiner({h: out.heads[h] for h in self.model.heads if h in self.ensemble_heads})
        return ModelOutput(heads=out.heads, ensemble=ensemble)


@contextmanager
def _all_heads_active(model: HybridModel) -> Iterator[None]:
    before = model.active_heads
    model.set_active(list(model.heads))
    try:
        yield
    finally:
        model.set_active(before)


def evaluate_test(
    model: HybridModel,
    data: DataBundle,
    ensemble_heads: Sequence[str],
    device: torch.device,
    *,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    limit: int | None = None,
) -> HoldoutResult | None:
    """Predict the test split with every head and bootstrap its metrics; None without a test split."""
    if data.test is None or not data.test_labels:
        return None
    loader = DataLoader(data.test, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    try:
        with _all_heads_active(model):
            preds = predict(_EveryHead(model, ensemble_heads), loader, device, limit=limit)
    finally:
        model.train(was_training)
    n = len(preds.labels)
    report = evaluate(preds.labels, preds.probs, data.class_names, list(data.test_ids)[:n])
    started = time.perf_counter()
    boot = bootstrap(report.labels, report.probs, report.metrics, seed=seed)
    seconds = time.perf_counter() - started
    log.info("test split: %d samples; bootstrap of %d resamples in %.2f s", n, boot.resamples, seconds)
    return HoldoutResult(report, boot, seconds)


def holdout_summary(result: HoldoutResult) -> dict[str, Any]:
    """summary.json's ``test`` (values), ``test_ci`` ([low, high]) and ``test_paired`` entries."""
    return {"test": prefixed(SPLIT, result.report.metrics), "test_ci": interval_entries(SPLIT, result.boot),
            "test_paired": paired_entries(result.boot)}


def sink_metrics(result: HoldoutResult) -> dict[str, float]:
    """The test metrics, each interval as ``<metric>_low``/``<metric>_high`` beside it."""
    out = prefixed(SPLIT, result.report.metrics)
    for key, (low, high) in prefixed(SPLIT, result.boot.intervals).items():
        out[f"{key}_low"], out[f"{key}_high"] = low, high
    return out


def write_test(result: HoldoutResult, run_dir: Path) -> list[Artifact]:
    """Confusion matrices, confidence table, intervals and paired differences in ``visualizations/test``."""
    folder = RunLayout(run_dir).test_dir
    artifacts = write_report(result.report, folder)
    artifacts.append(Artifact("table", "intervals", write_intervals(result.report, result.boot, SPLIT,
                                                                    folder / INTERVALS)))
    artifacts.append(Artifact("table", "paired", write_paired(result.boot, folder / PAIRED)))
    return artifacts


def run_test_split(
    model: HybridModel,
    data: DataBundle,
    sinks: SinkSet | None,
    run_dir: Path,
    device: torch.device,
    *,
    ensemble_heads: Sequence[str],
    batch_size: int,
    seed: int,
    step: int,
    num_workers: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """Evaluate, write and log the test split (main process only); summary entries, or {} without one."""
    if sinks is None:
        return {}
    result = evaluate_test(model, data, ensemble_heads, device, batch_size=batch_size, seed=seed,
                           num_workers=num_workers, limit=limit)
    if result is None:
        return {}
    artifacts = write_test(result, run_dir)
    sinks.log_metrics(sink_metrics(result), step, {"stage": SPLIT})
    for art in artifacts:
        key = f"{SPLIT}/{art.key}"
        if art.kind == "image":
            sinks.log_image(key, art.path, step)
        else:
            sinks.log_table(key, art.path, step)
    return holdout_summary(result)
