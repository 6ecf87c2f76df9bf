"""The owner modules of qsight's contracts: run-folder layout and metric names."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from qsight.metric_names import (
    DEFAULT_MONITOR,
    ENSEMBLE,
    MetricName,
    by_head,
    loss_head,
    metric_key,
    monitor_head,
    order_heads,
    parse_metric,
)
from qsight.runs.catalog import metric_table, run_row
from qsight.runs.folder import RunFolder
from qsight.runs.layout import (
    RunLayout,
    atomic_writer,
    best_epoch,
    epoch_folder_name,
    improves,
    lock_is_live,
    parse_epoch_folder,
    read_lock,
    remove_lock,
    write_atomic,
    write_lock,
)
from qsight.training.state import EarlyStopping
from tests.helpers import in_threads


def test_epoch_folders_are_named_and_parsed_by_one_rule(tmp_path: Path) -> None:
    for epoch in (1, 9, 10, 123):
        assert parse_epoch_folder(epoch_folder_name(epoch)) == epoch
    assert epoch_folder_name(3) == "epoch_03"
    for other in ("epoch_", "epoch_x1", "epochs_01", "gradcam", "epoch_01.tmp"):
        assert parse_epoch_folder(other) is None
    layout = RunLayout(tmp_path)
    for e in (10, 2, 1):
        layout.epoch_dir("quantum", e).mkdir(parents=True)
    (layout.stage_dir("quantum") / "notes").mkdir()
    assert [e for e, _ in layout.epoch_dirs("quantum")] == [1, 2, 10]
    assert layout.epoch_dirs("absent") == []


def test_atomic_write_mode_is_that_of_ordinary_files(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_atomic(target, "{}")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE(target.stat().st_mode) & 0o044  # readable by group and others (usual umask)


def test_atomic_write_keeps_the_old_file_on_error_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    write_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_writer(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("disk gone")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_concurrent_atomic_writes_never_collide(tmp_path: Path) -> None:
    target = tmp_path / "environment.json"

    def writer(i: int) -> None:
        for _ in range(50):
            write_atomic(target, json.dumps({"writer": i, "pad": "x" * 4096}))

    assert in_threads(writer, 4) == []
    assert json.loads(target.read_text())["writer"] in range(4)
    assert [p.name for p in tmp_path.iterdir()] == ["environment.json"]


def test_lock_names_a_live_process_until_removed(tmp_path: Path) -> None:
    write_lock(tmp_path)
    lock = read_lock(tmp_path)
    assert lock is not None and lock["pid"] == os.getpid() and lock_is_live(lock)
    assert RunFolder(tmp_path).status == "running"
    dead = dict(lock, pid=2**22 + 12345)
    assert not lock_is_live(dead)
    remove_lock(tmp_path)
    assert read_lock(tmp_path) is None


@pytest.mark.parametrize("mode", ["max", "min"])
def test_best_epoch_rule_is_the_one_training_uses(mode: str) -> None:
    values = {1: 0.5, 2: 0.7, 3: 0.7, 4: float("nan"), 5: 0.2}
    early = EarlyStopping(None, mode)  # type: ignore[arg-type]
    best_seen = None
    for epoch, value in values.items():
        if early.update(value):
            best_seen = epoch
    assert best_epoch(values, mode) == best_seen
    assert best_seen == (2 if mode == "max" else 5)
    assert not improves(None, 1.0) and improves(0.1, None) and not improves(1.0, 1.0)


def test_metric_keys_are_built_and_parsed_by_one_rule() -> None:
    key = metric_key("test", "matched-mlp", "qwk")
    assert key == "test/matched-mlp/qwk"
    assert parse_metric(key) == MetricName("test", "matched-mlp", "qwk")
    assert str(parse_metric(key)) == key
    for bad in ("train/lr", "val//qwk", "a/b/c/d", ""):
        assert parse_metric(bad) is None
    assert monitor_head(DEFAULT_MONITOR) == ENSEMBLE
    assert loss_head("loss") == "total" and loss_head("quantum") == "quantum"
    assert order_heads(["ensemble", "b", "a", "b"]) == ["b", "a", "ensemble"]
    grouped = by_head({"val/ensemble/qwk": 1.0, "val/zeta/qwk": 0.5, "train/zeta/loss": 2.0, "val/alpha/ece": 0.1})
    assert list(grouped) == ["zeta", "alpha", "ensemble"]
    assert grouped["zeta"] == {"qwk": 0.5}


def test_catalog_shows_whatever_heads_a_run_has(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "exp" / "r1"
    run.mkdir(parents=True)
    (run / "spec.toml").write_text('name = "exp"\n')
    final = {"val/retina-a/qwk": 0.8, "val/retina-b/qwk": 0.7, "val/ensemble/qwk": 0.9, "val/retina-a/ece": 0.1}
    write_atomic(run / "summary.json", json.dumps({"status": "completed", "final": final}))
    row = run_row(RunFolder(run))
    assert list(row.heads) == ["retina-a", "retina-b", "ensemble"]
    assert row.heads["retina-b"] == {"qwk": 0.7}
    table = metric_table([RunFolder(run)])
    assert table["retina-a"]["qwk"] == [0.8]
