"""Learning curves of a run (validation QWK and accuracy, training loss per head) as PNG bytes."""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.figure import Figure

PANELS = (("val/{head}/qwk", "validation QWK"), ("val/{head}/accuracy", "validation accuracy"),
          ("train/{head}/loss", "training loss"))
MAX_TICKS = 30
SKIP_HEADS = frozenset({"total"})  # train/total/loss is the sum of the heads' losses: another scale


@dataclass(frozen=True)
class Timeline:
    """The validation epochs of a run in order, one row each, and where each stage begins."""

    rows: tuple[Mapping[str, Any], ...]
    labels: tuple[str, ...]  # "<stage> <epoch>" per row
    stages: tuple[tuple[str, int], ...]  # (stage name, index of its first row)

    def heads(self, pattern: str) -> list[str]:
        """Heads having a metric that matches ``pattern`` (e.g. ``val/{head}/qwk``), in order of appearance."""
        prefix, suffix = pattern.split("{head}")
        found: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                if key.startswith(prefix) and key.endswith(suffix) and key.count("/") == 2:
                    found.setdefault(key[len(prefix):len(key) - len(suffix)], None)
        return [h for h in found if h not in SKIP_HEADS]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Positions and values of the rows that hold ``key``."""
        points = [(i, float(r[key])) for i, r in enumerate(self.rows) if isinstance(r.get(key), int | float)]
        return [p[0] for p in points], [p[1] for p in points]


def timeline(metrics: Sequence[Mapping[str, Any]]) -> Timeline:
    """One row per (stage, epoch), in first-seen order; a row logged again (resumed run) replaces the older."""
    rows: dict[tuple[str, int], Mapping[str, Any]] = {}
    for row in metrics:
        stage, epoch = row.get("stage"), row.get("epoch")
        if isinstance(stage, str) and isinstance(epoch, int):
            rows[(stage, epoch)] = row
    stages: list[tuple[str, int]] = []
    for index, (stage, _) in enumerate(rows):
        if not stages or stages[-1][0] != stage:
            stages.append((stage, index))
    labels = tuple(f"{stage} {epoch}" for stage, epoch in rows)
    return Timeline(tuple(rows.values()), labels, tuple(stages))


def _panel(ax: Axes, line: Timeline, pattern: str, title: str, names: bool) -> None:
    for head in line.heads(pattern):
        xs, ys = line.series(pattern.format(head=head))
        ax.plot(xs, ys, marker="o", markersize=3, label=head)
    for name, start in line.stages:
        if start > 0:
            ax.axvline(start - 0.5, color="grey", linestyle="--", linewidth=0.8)
        if names:
            ax.text(start - 0.4, 1.0, name, transform=ax.get_xaxis_transform(), fontsize=8, va="bottom", color="grey")
    ax.set_ylabel(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="grey")


def learning_curves(metrics: Sequence[Mapping[str, Any]]) -> bytes | None:
    """A PNG of validation QWK, validation accuracy and training loss per head across all epochs.

    Stage boundaries are dashed lines. None when no epoch was logged.
    """
    line = timeline(metrics)
    if not line.rows:
        return None
    count = len(line.rows)
    fig = Figure(figsize=(min(14.0, max(7.0, 0.4 * count + 3.0)), 8.0), dpi=100)
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    for index, (ax, (pattern, title)) in enumerate(zip(axes, PANELS, strict=True)):
        _panel(ax, line, pattern, title, names=index == 0)
    every = -(-count // MAX_TICKS)
    ticks = range(0, count, every)
    axes[-1].set_xticks(ticks, labels=[line.labels[i] for i in ticks], rotation=45, ha="right", fontsize=7)
    axes[-1].set_xlabel("stage, epoch")
    with warnings.catch_warnings():  # a run of one epoch: its stage names overhang, and the layout says so
        warnings.filterwarnings("ignore", message="Tight layout not applied", category=UserWarning)
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
