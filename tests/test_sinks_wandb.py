"""The wandb sink, offline: its files stay under <run>/wandb/ and hold what was logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qsight.sinks import RunInfo, SinkSet, WandbParams
from qsight.sinks.local import LocalSink
from qsight.sinks.wandb_sink import WandbSink, resolve_mode
from tests.helpers import history, read_finished, sink_artifacts

SPEC = {"name": "demo", "seed": 3, "train": {"batch_size": 8}}
def test_offline_run_files_hold_the_logged_data(tmp_path: Path) -> None:
    run = RunInfo("demo", "r1", tmp_path / "run", tmp_path, SPEC)
    files = sink_artifacts(run.run_dir)
    png, csv, ckpt = files["png"], files["csv"], files["ckpt"]
    wb = WandbSink(WandbParams(), name="wandb")
    sinks = SinkSet(LocalSink(), [wb])
    sinks.start(run)
    sinks.log_metrics({"train/global/loss": 1.25}, 3, {"stage": "classical", "epoch": 1})
    sinks.log_metrics({"val/ensemble/qwk": 0.5}, 6, {"stage": "classical", "epoch": 1})
    sinks.log_image("classical/confusion_ensemble", png, 6)
    sinks.log_table("classical/confidence", csv, 6)
    sinks.log_artifact(ckpt, "checkpoints")
    assert sinks.finish("completed", {"final": {"val/ensemble/qwk": 0.5}})["wandb"] == "ok"

    (offline,) = (run.run_dir / "wandb").glob("offline-run-*")
    records = read_finished(next(offline.glob("run-*.wandb")))
    rows = history(records)
    assert [(r["_step"], r.get("train/global/loss"), r.get("val/ensemble/qwk")) for r in rows] == [
        (3, 1.25, None),
        (6, None, 0.5),
    ]
    assert rows[1]["epoch"] == 1
    assert rows[1]["classical/confusion_ensemble/_type"] == "image-file"
    assert rows[1]["classical/confidence/_type"] == "table-file"
    media = offline / "files" / "media"
    assert len(list((media / "images").rglob("*.png"))) == 1
    (table,) = (media / "table").rglob("*.table.json")
    assert json.loads(table.read_text())["columns"] == ["id", "label", "pred", "confidence"]
    (run_rec,) = (r.run for r in records if r.HasField("run"))
    config = {i.key: json.loads(i.value_json) for i in run_rec.config.update}
    assert config["train"] == {"batch_size": 8}
    assert run_rec.project == "demo" and run_rec.display_name == "r1"
    assert any(r.HasField("artifact") and r.artifact.type == "model" for r in records)
    (exit_rec,) = (r.exit for r in records if r.HasField("exit"))
    assert exit_rec.exit_code == 0


def test_online_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode("online") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("online") == "online" and resolve_mode("offline") == "offline"


def test_failed_run_finishes_with_a_nonzero_exit_code(tmp_path: Path) -> None:
    run = RunInfo("demo", "r2", tmp_path / "run", tmp_path, SPEC)
    wb = WandbSink(WandbParams(), name="wandb")
    wb.start(run)
    wb.finish("failed", {})
    wb.finish("failed", {})  # a second finish is harmless
    (path,) = (run.run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    (exit_rec,) = (r.exit for r in read_finished(path) if r.HasField("exit"))
    assert exit_rec.exit_code == 1
