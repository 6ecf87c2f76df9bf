"""What a validation epoch's report costs: qsight's Pillow drawings and torch metrics vs the matplotlib
figures and torchmetrics calls they replaced, side by side in one run.

    python benchmarks/reporting.py            # table
    python benchmarks/reporting.py --json     # one JSON object

* confusion: one 5-class confusion matrix to PNG (a run draws one per head every validation epoch);
* collage: a Grad-CAM collage of 2 samples × (image + 4 heads) at 64 px;
* metrics: every metric of one head on 400 samples (`head_metrics`) vs the same torchmetrics calls;
* import: a fresh interpreter importing torch and then qsight's metrics, vs torch and then
  ``torchmetrics.functional.classification`` and ``pytorch_grad_cam.utils.image`` (what every run imported).

The references are the code qsight ran before (matplotlib `Figure` + `tight_layout`; torchmetrics).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from matplotlib.figure import Figure

from qsight.evaluation.confusion import plot_confusion, row_normalise
from qsight.evaluation.metrics import ECE_BINS, head_metrics
from qsight.evaluation.render import Panel, save_collage

NAMES = ["no DR", "mild", "moderate", "severe", "proliferative"]


def median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def matplotlib_confusion(counts: np.ndarray, path: Path) -> None:
    shares = row_normalise(counts)
    size = 2.0 + 0.9 * len(NAMES)
    fig = Figure(figsize=(size + 1.2, size), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ticks = np.arange(len(NAMES))
    ax.set_xticks(ticks, labels=NAMES, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"N = {int(counts.sum())}")
    for (row, col), count in np.ndenumerate(counts):
        ax.text(col, row, f"{count}\n{shares[row, col]:.0%}", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def matplotlib_collage(rows: list[list[Panel]], path: Path) -> None:
    fig = Figure(figsize=(1.9 * len(rows[0]), 2.0 * len(rows) + 0.4), dpi=100)
    axes = fig.subplots(len(rows), len(rows[0]), squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = axes[r][c]
            ax.axis("off")
            ax.imshow(panel.image)
            if panel.mask is not None:
                ax.contour(panel.mask.astype(np.float32), levels=[0.5], colors="lime", linewidths=0.8)
            if panel.peak is not None:
                ax.plot(panel.peak[1], panel.peak[0], marker="+", color="white", markersize=9, mew=2)
            ax.set_title(panel.title, fontsize=7)
    fig.suptitle("layercam at layer2, for each sample's true class", fontsize=9)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.95))
    fig.savefig(path)


def torchmetrics_head(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    import torchmetrics.functional.classification as tm

    target, p = torch.from_numpy(labels), torch.from_numpy(probs)
    preds, c = p.argmax(1), probs.shape[1]
    out = {
        "accuracy": tm.multiclass_accuracy(preds, target, c, average="micro"),
        "recall": tm.multiclass_recall(preds, target, c, average=None).mean(),
        "macro_f1": tm.multiclass_f1_score(preds, target, c, average="macro"),
        "qwk": tm.multiclass_cohen_kappa(preds, target, c, weights="quadratic"),
        "ece": tm.multiclass_calibration_error(p, target, c, n_bins=ECE_BINS),
        "auc": tm.binary_auroc(p[:, 2:].sum(1).clamp(0, 1), (target >= 2).long()),
    }
    return {k: float(v) for k, v in out.items()}


def import_seconds(modules: str, reps: int) -> float:
    """Median seconds a fresh interpreter spends importing `modules` after torch."""
    code = f"import time, torch; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(reps)]
    return statistics.median(runs)


def measure(reps: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 40, size=(5, 5))
    image = rng.integers(0, 255, size=(64, 64, 3)).astype(np.uint8)
    mask = np.zeros((64, 64), dtype=bool)
    mask[10:20, 30:40] = True
    rows = [[Panel(image, "sample: true mild", mask=mask)]
            + [Panel(image, f"head{i}: predicts moderate", peak=(12, 33), mask=mask) for i in range(4)]
            for _ in range(2)]
    labels = rng.integers(0, 5, size=400)
    logits = rng.normal(size=(400, 5)) + 2 * np.eye(5)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "x.png"
        out["confusion_ms"] = {"qsight": median_ms(lambda: plot_confusion(counts, NAMES, png), reps),
                               "matplotlib": median_ms(lambda: matplotlib_confusion(counts, png), reps)}
        out["collage_ms"] = {"qsight": median_ms(lambda: save_collage(rows, png, "layercam"), reps),
                             "matplotlib": median_ms(lambda: matplotlib_collage(rows, png), reps)}
    out["metrics_ms"] = {"qsight": median_ms(lambda: head_metrics(labels, probs, 2), reps),
                         "torchmetrics": median_ms(lambda: torchmetrics_head(labels, probs), reps)}
    out["import_s"] = {"qsight": import_seconds("qsight.evaluation.metrics, qsight.evaluation.render", 3),
                       "torchmetrics+grad-cam": import_seconds(
                           "torchmetrics.functional.classification, pytorch_grad_cam.utils.image", 3)}
    for row in out.values():
        ours, ref = next(iter(row.values())), list(row.values())[1]
        row["ratio"] = ref / ours
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions per row (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = measure(args.reps)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name, row in out.items():
        ours, ref = list(row.items())[:2]
        print(f"{name:13s} qsight {ours[1]:9.2f}   {ref[0]:>21s} {ref[1]:9.2f}   {row['ratio']:6.1f}× faster")


if __name__ == "__main__":
    main()
