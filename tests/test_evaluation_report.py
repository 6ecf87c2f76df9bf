"""Evaluation report files (confusion matrices, confidence table) and sample choice."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qsight.evaluation import choose_samples, confidence_rows, evaluate, write_report
from qsight.evaluation.confusion import read_confusion_csv

NAMES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative")


def probs_for(labels: np.ndarray, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), classes)) + 2.0 * np.eye(classes)[labels]
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_report_files_and_artifacts(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 5, size=40)
    probs = {"ensemble": probs_for(labels, 5, 1), "global": probs_for(labels, 5, 2)}
    ids = [f"img_{i:03d}.png" for i in range(40)]
    report = evaluate(labels, probs, NAMES, ids)
    assert report.heads == ["global", "ensemble"]  # ensemble last
    assert {"ensemble/qwk", "global/accuracy", "ensemble/referable_auc"} <= set(report.metrics)
    artifacts = write_report(report, tmp_path / "epoch_01")
    keys = {(a.kind, a.key) for a in artifacts}
    assert keys == {
        ("table", "confusion_counts/global"),
        ("image", "confusion/global"),
        ("table", "confusion_counts/ensemble"),
        ("image", "confusion/ensemble"),
        ("table", "confidence"),
    }
    for head in ("global", "ensemble"):
        names, counts = read_confusion_csv(tmp_path / "epoch_01" / f"confusion_{head}.csv")
        assert names == list(NAMES)
        assert counts.sum() == 40
        assert list(counts.sum(axis=1)) == list(np.bincount(labels, minlength=5))
        assert np.trace(counts) == round(report.metrics[f"{head}/accuracy"] * 40)
        with Image.open(tmp_path / "epoch_01" / f"confusion_{head}.png") as img:
            img.verify()
    rows = read_rows(tmp_path / "epoch_01" / "confidence.csv")
    assert len(rows) == 40
    assert rows[3]["id"] == "img_003.png" and rows[3]["true_name"] == NAMES[labels[3]]


def test_confidence_columns_and_values() -> None:
    labels = np.array([2, 0])
    ensemble = np.array([[0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    rows = confidence_rows(labels, {"ensemble": ensemble, "quantum": ensemble[::-1]}, ["a", "b", "c"], ["x", "y"])
    assert list(rows[0])[:6] == ["id", "true_label", "true_name", "quantum_pred", "quantum_pred_name", "quantum_p_a"]
    first, second = rows
    assert first["ensemble_pred"] == 2 and first["ensemble_pred_name"] == "c" and first["error"] == 0
    assert first["confidence"] == pytest.approx(0.6) and first["margin"] == pytest.approx(0.3)
    assert second["error"] == 1 and second["margin"] == pytest.approx(0.2)
    assert second["quantum_pred_name"] == "c"


def test_confidence_table_with_a_head_missing(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 1])
    probs = {"quantum": probs_for(labels, 3, 0), "ensemble": probs_for(labels, 3, 1)}  # no "global"
    report = evaluate(labels, probs, ["a", "b", "c"], ["1", "2", "3", "4"])
    write_report(report, tmp_path)
    header = read_rows(tmp_path / "confidence.csv")[0].keys()
    assert not any(col.startswith("global") for col in header)
    assert {"quantum_pred", "ensemble_pred", "confidence", "margin", "error"} <= set(header)
    assert not (tmp_path / "confusion_global.csv").exists()
    assert "referable_auc" not in " ".join(report.metrics)  # three classes: no DR-specific metrics


def test_degenerate_report_is_written(tmp_path: Path) -> None:
    labels = np.array([1])
    report = evaluate(labels, {"ensemble": np.array([[0.1, 0.9]])}, ["neg", "pos"], ["only"])
    write_report(report, tmp_path)
    _, counts = read_confusion_csv(tmp_path / "confusion_ensemble.csv")
    assert counts.tolist() == [[0, 0], [0, 1]]
    empty = evaluate(np.array([], dtype=int), {"ensemble": np.zeros((0, 2))}, ["neg", "pos"], [])
    write_report(empty, tmp_path / "empty")
    assert read_rows(tmp_path / "empty" / "confidence.csv") == []


def test_evaluate_rejects_mismatched_inputs() -> None:
    labels = np.array([0, 1])
    with pytest.raises(ValueError, match="for 3 classes"):
        evaluate(labels, {"ensemble": np.full((2, 2), 0.5)}, ["a", "b", "c"], ["1", "2"])
    with pytest.raises(ValueError, match="ids"):
        evaluate(labels, {"ensemble": np.full((2, 2), 0.5)}, ["a", "b"], ["1"])


def test_choose_samples_covers_every_class_before_repeats() -> None:
    labels = np.array([3, 3, 3, 3, 0, 0, 1, 3, 2, 2, 3, 0])
    chosen = choose_samples(labels, 7, seed=5)
    assert len(chosen) == len(set(chosen)) == 7
    classes = [int(labels[i]) for i in chosen]
    assert sorted(classes[:4]) == [0, 1, 2, 3]  # one of each class first
    assert sorted(classes[4:]) == [0, 2, 3]  # class 1 has no second sample
    assert choose_samples(labels, 7, seed=5) == chosen  # stable across calls (epochs)
    assert choose_samples(list(labels), 7, seed=5) == chosen
    assert len(choose_samples(labels, 100, seed=5)) == len(labels)
    assert choose_samples(labels, 0, seed=5) == [] and choose_samples([], 3) == []
    seeds = {tuple(choose_samples(labels, 7, seed=s)) for s in range(6)}
    assert len(seeds) > 1  # the seed matters


def test_confusion_image_colours_each_cell_by_its_row_share(tmp_path: Path) -> None:
    from qsight.evaluation.confusion import plot_confusion
    from qsight.evaluation.heatmap import BAR_WIDTH, CELL, _colour

    counts = np.array([[9, 1, 0], [0, 0, 0], [2, 2, 4]])
    names = ["no DR", "a long class name for the axis", "moderate"]
    with Image.open(plot_confusion(counts, names, tmp_path / "c.png")) as img:
        rgb = np.asarray(img.convert("RGB"))
    blues = {tuple(_colour(s)) for s in (0.9, 0.1, 0.0, 0.25, 0.5)}
    found = [tuple(int(v) for v in px) for px in rgb.reshape(-1, 3)]
    assert blues <= set(found)  # every share's colour is drawn (an empty row stays at 0)
    grid = rgb[:, : rgb.shape[1] - BAR_WIDTH - 90]  # left of the colour bar
    dark = np.all(grid == _colour(0.9), axis=-1)  # the no-DR row's 90 % cell: one cell, square
    ys, xs = np.nonzero(dark)
    assert CELL * 0.6 <= xs.max() - xs.min() + 1 <= CELL and CELL * 0.6 <= ys.max() - ys.min() + 1 <= CELL
    assert xs.min() > rgb.shape[1] * 0.25  # the long names fit to its left
