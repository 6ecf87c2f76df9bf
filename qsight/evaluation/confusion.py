"""Confusion matrices: raw counts as CSV, row-normalised heat maps as PNG."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure

CORNER = "true\\predicted"


def confusion_counts(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    pairs = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(preds, dtype=np.int64)
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes).astype(np.int64)


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; rows without samples stay zero."""
    totals = counts.sum(axis=1, keepdims=True).astype(np.float64)
    shares: np.ndarray = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)
    return shares


def write_confusion_csv(counts: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Counts with class names as header and index (first column)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([CORNER, *class_names])
        for name, row in zip(class_names, counts, strict=True):
            writer.writerow([name, *(int(v) for v in row)])
    return path


def read_confusion_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Class names and counts of a file written by :func:`write_confusion_csv`."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    names = rows[0][1:]
    counts = np.array([[int(v) for v in row[1:]] for row in rows[1:]], dtype=np.int64)
    return names, counts


def plot_confusion(counts: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised heat map, each cell annotated with its count and row share."""
    shares = row_normalise(counts)
    size = 2.0 + 0.9 * len(class_names)
    fig = Figure(figsize=(size + 1.2, size), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"N = {int(counts.sum())}")
    for (row, col), count in np.ndenumerate(counts):
        colour = "white" if shares[row, col] > 0.5 else "black"
        ax.text(col, row, f"{count}\n{shares[row, col]:.0%}", ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path
