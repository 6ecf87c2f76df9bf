"""One validation epoch's evaluation: metrics, confusion matrices, confidence table.

Files written by :func:`write_report` into the epoch folder, with the artifact keys
handed to the sinks:

``confusion_<head>.csv``   table ``confusion_counts/<head>``   raw counts, class names as header/index
``confusion_<head>.png``   image ``confusion/<head>``          row-normalised heat map
``confidence.csv``         table ``confidence``                one row per validation sample
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qsight.evaluation.artifact import Artifact, safe_name
from qsight.evaluation.confidence import head_order, write_confidence_csv
from qsight.evaluation.confusion import confusion_counts, plot_confusion, write_confusion_csv
from qsight.evaluation.metrics import check_inputs, compute_metrics


@dataclass(frozen=True)
class EvalReport:
    """Everything evaluated for one epoch; ``probs`` and ``confusion`` keyed by head (``ensemble`` last)."""

    class_names: tuple[str, ...]
    labels: np.ndarray  # (N,)
    probs: dict[str, np.ndarray]  # head -> (N, C)
    ids: tuple[str, ...]
    metrics: dict[str, float]  # "<head>/<metric>", see qsight.evaluation.metrics
    confusion: dict[str, np.ndarray]  # head -> (C, C) counts, row = true class

    @property
    def heads(self) -> list[str]:
        return list(self.probs)


def evaluate(
    labels: np.ndarray | Sequence[int],
    probs: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    ids: Sequence[str],
    referable_from: int | str | None = "auto",
) -> EvalReport:
    """Metrics and confusion matrices of every head in ``probs`` (N, C) against ``labels`` (N,)."""
    label_array = np.asarray(labels, dtype=np.int64)
    num_classes = len(class_names)
    ordered = {h: np.asarray(probs[h], dtype=np.float64) for h in head_order(probs)}
    for head, head_probs in ordered.items():
        if head_probs.ndim != 2 or head_probs.shape[1] != num_classes:
            raise ValueError(f"{head}: probs of shape {head_probs.shape} for {num_classes} classes")
        check_inputs(label_array, head_probs)
    if len(ids) != len(label_array):
        raise ValueError(f"{len(ids)} ids for {len(label_array)} labels")
    confusion = {h: confusion_counts(label_array, p.argmax(axis=1), num_classes) for h, p in ordered.items()}
    return EvalReport(
        class_names=tuple(class_names),
        labels=label_array,
        probs=ordered,
        ids=tuple(str(i) for i in ids),
        metrics=compute_metrics(label_array, ordered, referable_from),
        confusion=confusion,
    )


def write_report(report: EvalReport, folder: Path) -> list[Artifact]:
    """Write confusion CSV/PNG per head and the confidence table into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    artifacts: list[Artifact] = []
    for head, counts in report.confusion.items():
        stem = f"confusion_{safe_name(head)}"
        csv_path = write_confusion_csv(counts, report.class_names, folder / f"{stem}.csv")
        title = f"{head} (N = {int(counts.sum())})"
        png_path = plot_confusion(counts, report.class_names, folder / f"{stem}.png", title)
        artifacts += [Artifact("table", f"confusion_counts/{head}", csv_path)]
        artifacts += [Artifact("image", f"confusion/{head}", png_path)]
    table = write_confidence_csv(report.labels, report.probs, report.class_names, report.ids, folder / "confidence.csv")
    artifacts.append(Artifact("table", "confidence", table))
    return artifacts
