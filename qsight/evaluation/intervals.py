"""Bootstrap intervals of an evaluation as files and summary entries: one format for the run's test
split (``visualizations/test/``, summary.json) and for ``qsight evaluate``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from qsight.evaluation.bootstrap import Bootstrap
from qsight.evaluation.report import EvalReport
from qsight.metric_names import by_head, prefixed


def interval_entries(split: str, boot: Bootstrap) -> dict[str, list[float]]:
    """``{"<split>/<head>/<metric>": [low, high]}``."""
    return prefixed(split, {k: [low, high] for k, (low, high) in boot.intervals.items()})


def paired_entries(boot: Bootstrap) -> dict[str, dict[str, Any]]:
    """``{"<a>-vs-<b>": {"qwk_diff": d, "ci": [low, high] or None}}``."""
    return {name: {"qwk_diff": d.difference, "ci": None if d.interval is None else list(d.interval)}
            for name, d in boot.paired.items()}


def write_intervals(report: EvalReport, boot: Bootstrap, split: str, path: Path) -> Path:
    """One row per head and metric: value, low, high."""
    level = f"{boot.level:.0%}"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["head", "metric", "value", f"low ({level})", f"high ({level})"])
        for head, metrics in by_head(prefixed(split, report.metrics), split).items():
            for metric, value in metrics.items():
                low, high = boot.intervals.get(f"{head}/{metric}", (None, None))
                writer.writerow([head, metric, value, low, high])
    return path


def write_paired(boot: Bootstrap, path: Path) -> Path:
    """One row per pair of heads: QWK difference, low, high."""
    level = f"{boot.level:.0%}"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pair", "qwk_diff", f"low ({level})", f"high ({level})"])
        for name, d in boot.paired.items():
            low, high = d.interval if d.interval is not None else (None, None)
            writer.writerow([name, d.difference, low, high])
    return path
