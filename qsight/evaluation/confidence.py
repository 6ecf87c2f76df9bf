"""The per-sample confidence table: one row per validation sample.

Columns, in order: ``id``, ``true_label``, ``true_name``; for every head present
(``ensemble`` last) ``<head>_pred``, ``<head>_pred_name`` and ``<head>_p_<class>`` per
class; then, from the ensemble, ``confidence`` (top probability), ``margin`` (top
minus second probability) and ``error`` (1 when the ensemble is wrong, else 0).
Heads missing from ``probs`` have no columns; without an ensemble the last three
columns come from the last head given.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from qsight.metric_names import order_heads

Row = dict[str, str | int | float]


def head_order(probs: Mapping[str, np.ndarray]) -> list[str]:
    """Head names in the given order, with ``ensemble`` moved last."""
    return order_heads(probs)


def confidence_rows(
    labels: np.ndarray,
    probs: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    ids: Sequence[str],
) -> list[Row]:
    """The table as a list of rows (column name to value)."""
    heads = head_order(probs)
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids for {len(labels)} labels")
    rows: list[Row] = []
    for i, (sample_id, label) in enumerate(zip(ids, labels, strict=True)):
        row: Row = {"id": str(sample_id), "true_label": int(label), "true_name": class_names[int(label)]}
        for head in heads:
            row |= _head_columns(head, np.asarray(probs[head][i], dtype=np.float64), class_names)
        if heads:
            row |= _summary(np.asarray(probs[heads[-1]][i], dtype=np.float64), int(label))
        rows.append(row)
    return rows


def _head_columns(head: str, p: np.ndarray, class_names: Sequence[str]) -> Row:
    pred = int(np.argmax(p))
    row: Row = {f"{head}_pred": pred, f"{head}_pred_name": class_names[pred]}
    row |= {f"{head}_p_{name}": round(float(v), 6) for name, v in zip(class_names, p, strict=True)}
    return row


def _summary(p: np.ndarray, label: int) -> Row:
    top = np.sort(p)[::-1]
    second = float(top[1]) if len(top) > 1 else 0.0
    return {
        "confidence": round(float(top[0]), 6),
        "margin": round(float(top[0]) - second, 6),
        "error": int(int(np.argmax(p)) != label),
    }


def confidence_columns(probs: Mapping[str, np.ndarray], class_names: Sequence[str]) -> list[str]:
    """Column names of the table, in order."""
    columns = ["id", "true_label", "true_name"]
    for head in head_order(probs):
        columns += [f"{head}_pred", f"{head}_pred_name", *(f"{head}_p_{name}" for name in class_names)]
    return columns + (["confidence", "margin", "error"] if probs else [])


def write_confidence_csv(
    labels: np.ndarray,
    probs: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    ids: Sequence[str],
    path: Path,
) -> Path:
    """Write the table as CSV (the header alone when there are no samples)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=confidence_columns(probs, class_names))
        writer.writeheader()
        writer.writerows(confidence_rows(labels, probs, class_names, ids))
    return path
