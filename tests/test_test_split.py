"""The test split: holdout and grouped splits, synthetic and file datasets, and what a run writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qsight.components import DATASETS
from qsight.data import DataContext, SyntheticFundusParams
from qsight.data import synthetic_set as sset
from qsight.data.splits import grouped_split, holdout_split, shared_groups, stratified_split
from qsight.errors import DataError
from tests.helpers import cli, summary, tiny_spec

LABELS = [0] * 40 + [1] * 12 + [2] * 20 + [3] * 5 + [4] * 3


def test_holdout_without_test_is_the_stratified_split() -> None:
    train, val, test = holdout_split(LABELS, 0.2, 0.0, seed=3)
    assert (train, val) == stratified_split(LABELS, 0.2, seed=3) and test == []


def test_holdout_split_is_disjoint_stratified_and_seeded() -> None:
    train, val, test = holdout_split(LABELS, 0.2, 0.2, seed=3)
    assert sorted(train + val + test) == list(range(len(LABELS)))
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert np.bincount([LABELS[i] for i in test], minlength=5).tolist() == [8, 2, 4, 1, 1]
    assert holdout_split(LABELS, 0.2, 0.2, seed=3) == (train, val, test)
    assert holdout_split(LABELS, 0.2, 0.2, seed=4) != (train, val, test)
    with pytest.raises(ValueError):
        holdout_split(LABELS, 0.6, 0.4, seed=0)


def test_grouped_split_never_shares_a_group() -> None:
    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in range(150)]
    groups = [p for p in patients for _ in range(2)]  # two eyes per patient
    labels = [int(g) for p in patients for g in np.clip(rng.integers(0, 5) + rng.integers(-1, 2, 2), 0, 4)]
    for seed in range(5):
        train, val, test = holdout_split(labels, 0.2, 0.15, seed, groups=groups)
        sides = [{groups[i] for i in part} for part in (train, val, test)]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        assert sorted(train + val + test) == list(range(len(labels)))
        assert 0.1 < len(test) / len(labels) < 0.2 and 0.15 < len(val) / len(labels) < 0.25
    assert grouped_split(labels, groups, 0.2, 0.15, 1) == grouped_split(labels, groups, 0.2, 0.15, 1)
    assert shared_groups(["a", "b"], ["c"], ["b", "d"]) == ["b"]


def test_synthetic_test_split_leaves_train_and_val_bit_identical(tmp_path: Path) -> None:
    small = {"image_size": 32, "train_size": 24, "val_size": 12}
    plain, tested = SyntheticFundusParams(**small), SyntheticFundusParams(**small, test_size=10)
    assert sset.cache_key(plain, 5) == sset.cache_key(tested, 5)  # cached train/val arrays are reused
    a, b = sset.synthetic_arrays(plain, 5, None), sset.synthetic_arrays(tested, 5, tmp_path)
    for name in ("train_images", "train_labels", "val_images", "val_labels", "val_masks"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert sset.synthetic_test_arrays(plain, 5, None) is None
    test = sset.synthetic_test_arrays(tested, 5, tmp_path)
    assert test is not None and test[0].shape == (10, 32, 32, 3)
    assert not any(np.array_equal(img, v) for img in test[0] for v in a.val_images)  # own seed stream
    cached = sset.synthetic_test_arrays(tested, 5, tmp_path)
    assert cached is not None and np.array_equal(cached[0], test[0])
    entry = DATASETS.get("synthetic-fundus")
    bundle = entry.build(tested, DataContext(seed=5, cache_dir=tmp_path))
    assert bundle.test is not None and list(bundle.test_labels) == test[1].tolist()
    assert bundle.test_ids[0] == "synthetic-test-00000"
    assert entry.build(plain, DataContext(seed=5, cache_dir=tmp_path)).test is None


def _write_png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value % 255, dtype=np.uint8)).save(path)


def _csv(root: Path, name: str, rows: list[tuple[str, int, str]]) -> None:
    with (root / name).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "level", "patient"])
        for ident, label, patient in rows:
            _write_png(root / "images" / f"{ident}.png", len(ident) + label)
            writer.writerow([ident, label, patient])


def _csv_bundle(root: Path, **params: Any) -> Any:
    entry = DATASETS.get("csv")
    p = entry.params.model_validate({"image_size": 16, "root": str(root), "csv": "labels.csv", "image_dir": "images",
                                     "id_column": "image", "label_column": "level", "num_classes": 3, **params})
    return entry.build(p, DataContext(seed=0, cache_dir=root / "cache"))


def _eyes(n_patients: int, start: int = 0) -> list[tuple[str, int, str]]:
    return [(f"p{i}_{eye}", (i + (eye == "r")) % 3, f"p{i}") for i in range(start, start + n_patients)
            for eye in ("l", "r")]


def test_csv_group_column_and_test_fraction(tmp_path: Path) -> None:
    _csv(tmp_path, "labels.csv", _eyes(60))
    b = _csv_bundle(tmp_path, val_fraction=0.2, test_fraction=0.2, group_column="patient")
    assert b.test is not None and len(b.test_labels) > 0

    def patients(ids: Any) -> set[str]:
        return {Path(str(i)).stem.split("_")[0] for i in ids}

    train = patients(str(s.path) for s in b.train.samples)
    val, test = patients(b.val_ids), patients(b.test_ids)
    assert not (train & val or train & test or val & test)
    assert len(train) + len(val) + len(test) == 60


def test_csv_explicit_test_csv_and_groups_across_files(tmp_path: Path) -> None:
    _csv(tmp_path, "labels.csv", _eyes(20))
    _csv(tmp_path, "test.csv", _eyes(5, start=20))
    b = _csv_bundle(tmp_path, test_csv="test.csv", group_column="patient")
    assert sorted(Path(str(i)).stem for i in b.test_ids) == sorted(r[0] for r in _eyes(5, start=20))
    _csv(tmp_path, "leaky.csv", _eyes(3, start=18))  # p18, p19 are in labels.csv too
    with pytest.raises(DataError, match=r"'patient': 2 group|repeats labels.csv row"):
        _csv_bundle(tmp_path, val_csv="leaky.csv", group_column="patient")
    with pytest.raises(DataError, match="no column 'ward'"):
        _csv_bundle(tmp_path, group_column="ward")


def test_image_folder_test_dir(tmp_path: Path) -> None:
    for split, n in (("", 8), ("held", 3)):
        for cls in ("a", "b"):
            for k in range(n):
                _write_png(tmp_path / split / cls / f"{split}{k}.png", k)
    entry = DATASETS.get("image-folder")
    p = entry.params.model_validate({"image_size": 16, "root": str(tmp_path), "test_dir": "held"})
    b = entry.build(p, DataContext(seed=0, cache_dir=tmp_path / "cache"))
    assert b.class_names == ("a", "b") and len(b.test_labels) == 6
    assert all("/held/" in str(i) for i in b.test_ids)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tested")
    run_dir = tmp / "reports" / "runs" / "tiny" / "run"
    res = cli("run", str(tiny_spec(tmp, data__test_size=30)), "--run-dir", str(run_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


def test_tiny_run_writes_the_test_split(tiny_run: Path) -> None:
    data = summary(tiny_run)
    heads = ("global", "compressed", "quantum", "ensemble")
    assert {f"test/{h}/qwk" for h in heads} <= set(data["test"])
    assert {f"test/{h}/accuracy" for h in heads} <= set(data["test_ci"])
    for key, (low, high) in data["test_ci"].items():
        assert low <= high, key
    pairs = ["global-vs-compressed", "global-vs-quantum", "global-vs-ensemble", "compressed-vs-quantum",
             "compressed-vs-ensemble", "quantum-vs-ensemble"]
    assert list(data["test_paired"]) == pairs
    assert set(data["test_paired"]["global-vs-quantum"]) == {"qwk_diff", "ci"}
    assert set(data["parameters"]) == {"global", "compressed", "quantum"}
    assert all(isinstance(v, int) and v > 0 for v in data["parameters"].values())
    folder = tiny_run / "visualizations" / "test"
    for name in ("confidence.csv", "intervals.csv", "paired.csv", *(f"confusion_{h}.png" for h in heads)):
        assert (folder / name).is_file(), name
    with (folder / "confidence.csv").open() as fh:
        assert sum(1 for _ in fh) == 31  # header + every test sample
    lines = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    test_lines = [x for x in lines if x["stage"] == "test"]
    assert len(test_lines) == 1 and "test/quantum/qwk_low" in test_lines[0]
    assert data["final"] and not any(k.startswith("test/") for k in data["final"])


def test_runs_list_compare_and_report_show_test_figures(tiny_run: Path) -> None:
    root = tiny_run.parents[2]
    listed = cli("runs", "list", "--root", str(root), "--format", "json")
    assert listed.returncode == 0, listed.stderr
    row = json.loads(listed.stdout)[0]
    assert set(row["test"]["quantum"]["qwk"]) == {"value", "ci"}
    table = cli("runs", "list", "--root", str(root))
    assert "quantum test" in table.stdout and "[" in table.stdout
    compared = cli("runs", "compare", str(tiny_run), str(tiny_run), "--format", "json")
    assert compared.returncode == 0, compared.stderr
    assert len(json.loads(compared.stdout)["test"]["ensemble"]["qwk"]) == 2
    page = cli("report", str(tiny_run), "--out", str(tiny_run.parent / "page.html"))
    assert page.returncode == 0, page.stderr
    html = (tiny_run.parent / "page.html").read_text()
    assert "Test split" in html and "global-vs-quantum" in html and "95 % bootstrap interval" in html
