"""Sinks lose nothing: long runs, resumed runs, reused folder names, dry runs, failures mid-run.

Real parts: an MLflow sqlite store read back with `MlflowClient`, WandB offline files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from qsight.sinks import MlflowParams, RunInfo, SinkSet, WandbParams
from qsight.sinks.local import LocalSink
from qsight.sinks.mlflow_sink import MlflowSink
from qsight.sinks.wandb_sink import WandbSink
from tests.helpers import history, read_finished

SPEC: dict[str, Any] = {"name": "demo", "seed": 1, "train": {"batch_size": 8}}


@pytest.fixture(autouse=True)
def _no_ambient_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def run_info(root: Path, folder: str = "r1", **flags: bool) -> RunInfo:
    run_dir = root / "reports" / "runs" / "demo" / folder
    return RunInfo("demo", run_dir.name, run_dir, root / "reports", SPEC, **flags)


def client_for(run: RunInfo) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{run.reports_root.resolve() / 'mlflow.db'}")


def epoch_files(run_dir: Path) -> tuple[Path, Path]:
    from PIL import Image

    folder = run_dir / "visualizations" / "classical" / "epoch_01"
    folder.mkdir(parents=True, exist_ok=True)
    png, csv = folder / "confusion_global.png", folder / "confidence.csv"
    Image.new("RGB", (8, 8), (0, 90, 200)).save(png)
    csv.write_text("id,label,pred\na,0,0\nb,1,2\n")
    return png, csv


def log_epoch(sinks: SinkSet, files: tuple[Path, Path], epoch: int, steps: int = 4) -> None:
    """What the trainer logs for one epoch: per-step losses, then validation metrics and artifacts."""
    ctx = {"stage": "classical", "epoch": epoch}
    for i in range(1, steps + 1):
        sinks.log_metrics({"train/total/loss": 1.0 / (epoch * steps + i)}, (epoch - 1) * steps + i, ctx)
    step = epoch * steps
    sinks.log_metrics({"val/ensemble/qwk": epoch / 1000, "val/global/accuracy": 0.5}, step, ctx)
    sinks.log_image("classical/confusion/global", files[0], step)
    sinks.log_table("classical/confidence", files[1], step)
    sinks.log_table("classical/confusion_counts/global", files[1], step)


def steps_of(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(int(m.step) for m in client.get_metric_history(run_id, key))


def artifact_names(client: MlflowClient, run_id: str, folder: str) -> list[str]:
    return [info.path for info in client.list_artifacts(run_id, folder)]


@pytest.mark.slow
def test_110_epochs_of_tables_and_images_stay_within_mlflow_limits(tmp_path: Path) -> None:
    """Fails on the old code: the tag listing every table outgrew 8000 characters (JSONDecodeError)."""
    run = run_info(tmp_path)
    files = epoch_files(run.run_dir)
    sink = MlflowSink(MlflowParams())
    sinks = SinkSet(LocalSink(), [sink])
    sinks.start(run)
    for epoch in range(1, 111):
        log_epoch(sinks, files, epoch, steps=1)
    assert sinks.finish("completed", {"final": {}})["mlflow"] == "ok"

    client, run_id = client_for(run), str(sink.run_id)
    mlflow_run = client.get_run(run_id)
    assert mlflow_run.info.status == "FINISHED"
    assert steps_of(client, run_id, "val/ensemble/qwk") == list(range(1, 111))
    tables = set(artifact_names(client, run_id, "tables"))
    for step in range(1, 111):
        assert f"tables/classical_confidence_step{step}.json" in tables
        assert f"tables/classical_confusion_counts_global_step{step}.json" in tables
    table = json.loads(
        Path(client.download_artifacts(run_id, "tables/classical_confidence_step110.json", str(tmp_path))).read_text()
    )
    assert table == {"columns": ["id", "label", "pred"], "data": [["a", 0, 0], ["b", 1, 2]]}
    images = [p for p in artifact_names(client, run_id, "images") if p.endswith(".png")]
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in images) == list(range(1, 111))
    listed = json.loads(mlflow_run.data.tags["mlflow.loggedArtifacts"])  # valid JSON, latest table of each key
    assert {e["path"] for e in listed} == {
        "tables/classical_confidence_step110.json",
        "tables/classical_confusion_counts_global_step110.json",
    }


@pytest.mark.slow
def test_resumed_run_logs_no_step_twice_in_mlflow(tmp_path: Path) -> None:
    """A process killed mid-epoch 4 (checkpoint after epoch 2), then resumed: epochs 3 and 4 are logged again.

    Fails on the old code: the steps of epochs 3 and 4 are held twice, the tables doubled.
    """
    run = run_info(tmp_path)
    files = epoch_files(run.run_dir)
    first = MlflowSink(MlflowParams())
    sinks = SinkSet(LocalSink(), [first])
    sinks.start(run)
    for epoch in (1, 2, 3):
        log_epoch(sinks, files, epoch)
    sinks.log_metrics({"train/total/loss": 0.5}, 13, {"stage": "classical", "epoch": 4})  # then killed
    second = MlflowSink(MlflowParams())
    resumed = SinkSet(LocalSink(), [second])
    resumed.start(dataclasses.replace(run, resumed=True))
    for epoch in (3, 4, 5):
        log_epoch(resumed, files, epoch)
    assert resumed.finish("completed", {"final": {}})["mlflow"] == "ok"

    client, run_id = client_for(run), str(first.run_id)
    assert second.run_id == run_id and client.get_run(run_id).info.status == "FINISHED"
    assert steps_of(client, run_id, "train/total/loss") == list(range(1, 21))
    assert steps_of(client, run_id, "val/ensemble/qwk") == [4, 8, 12, 16, 20]
    images = [p for p in artifact_names(client, run_id, "images") if p.endswith(".png")]
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in images) == [4, 8, 12, 16, 20]
    local = client.download_artifacts(run_id, "tables/classical_confidence_step12.json", str(tmp_path))
    assert len(json.loads(Path(local).read_text())["data"]) == 2  # replaced, not appended to


@pytest.mark.slow
def test_new_run_never_joins_an_mlflow_run_of_the_same_folder_name(tmp_path: Path) -> None:
    """Fails on the old code: a new run in another folder of the same name reopened the first MLflow run."""
    one, two = run_info(tmp_path / "a"), run_info(tmp_path / "b")
    two = dataclasses.replace(two, reports_root=one.reports_root)  # one store, folder name "r1" twice
    sinks = [MlflowSink(MlflowParams()) for _ in range(3)]
    for sink, run in zip(sinks, [one, two, dataclasses.replace(one, resumed=True)], strict=True):
        sink.start(run)
        sink.finish("completed", {})
    assert sinks[0].run_id != sinks[1].run_id  # a new run, a new MLflow run
    assert sinks[2].run_id == sinks[0].run_id  # resuming folder a finds folder a's run


@pytest.mark.slow
def test_dry_run_is_marked_in_mlflow_and_wandb(tmp_path: Path) -> None:
    """Fails on the old code (RunInfo had no dry_run: nothing marked a dry run)."""
    dry, plain = run_info(tmp_path, "dry", dry_run=True), run_info(tmp_path, "plain")
    ml = {run.run_id: MlflowSink(MlflowParams()) for run in (dry, plain)}
    wb = {run.run_id: WandbSink(WandbParams(tags=("nightly",))) for run in (dry, plain)}
    for run in (dry, plain):
        sinks = SinkSet(LocalSink(), [ml[run.run_id], wb[run.run_id]])
        sinks.start(run)
        assert sinks.finish("completed", {})["wandb"] == "ok"
    client = client_for(dry)
    assert client.get_run(str(ml["dry"].run_id)).data.tags["qsight.dry_run"] == "true"
    assert client.get_run(str(ml["plain"].run_id)).data.tags["qsight.dry_run"] == "false"
    for run, tags, flag in ((dry, ["nightly", "dry_run"], True), (plain, ["nightly"], False)):
        (path,) = (run.run_dir / "wandb").glob("offline-run-*/run-*.wandb")
        (record,) = (r.run for r in read_finished(path) if r.HasField("run"))
        assert list(record.tags) == tags
        assert json.loads({i.key: i.value_json for i in record.config.update}["dry_run"]) is flag


def test_resumed_wandb_run_keeps_its_id(tmp_path: Path) -> None:
    """Fails on the old code: every process started a W&B run of its own."""
    run = run_info(tmp_path)
    for process, resumed in ((1, False), (2, True)):
        sink = WandbSink(WandbParams())
        sinks = SinkSet(LocalSink(), [sink])
        sinks.start(dataclasses.replace(run, resumed=resumed))
        sinks.log_metrics({"val/ensemble/qwk": 0.1 * process}, 10 * process, {"stage": "s", "epoch": process})
        sinks.finish("completed" if resumed else "interrupted", {})
    other = WandbSink(WandbParams())
    other.start(run_info(tmp_path / "elsewhere"))  # a new run in a folder of the same name
    other.finish("completed", {})

    run_id = json.loads((run.run_dir / "wandb" / "qsight-wandb.json").read_text())["id"]
    files = sorted((run.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [f.name for f in files] == [f"run-{run_id}.wandb"] * 2
    assert [[row["_step"] for row in history(read_finished(f))] for f in files] == [[10], [20]]
    assert other.run_id != run_id


def test_resume_on_a_service_still_holding_the_run_says_why(tmp_path: Path) -> None:
    """A process that joined another's W&B service (WANDB_SERVICE, exported by wandb.init) and resumes a
    run that service still holds (its first process died without finishing) gets a message naming the
    cause and the way out. This was CI's intermittent failure: the test process's service was inherited."""
    run = run_info(tmp_path)
    first = WandbSink(WandbParams())
    first.start(run)  # left open, as a killed process leaves it
    try:
        assert os.environ.get("WANDB_SERVICE"), "wandb.init exports its service to child processes"
        second = WandbSink(WandbParams())
        with pytest.raises(RuntimeError, match=r"is in use: this process joined the W&B service.*unset WANDB_SERVICE"):
            second.start(dataclasses.replace(run, resumed=True))
    finally:
        first.finish("completed", {})


@pytest.mark.slow
def test_sink_failing_mid_run_leaves_no_mlflow_run_running(tmp_path: Path) -> None:
    """Fails on the old code: a sink disabled by a failure was never finished (its run stayed RUNNING)."""
    run = run_info(tmp_path)
    sink = MlflowSink(MlflowParams())
    sinks = SinkSet(LocalSink(), [sink])
    sinks.start(run)
    sinks.log_metrics({"val/ensemble/qwk": 0.5}, 1, {"stage": "s", "epoch": 1})
    sinks.log_image("classical/confusion/global", run.run_dir / "missing.png", 1)
    statuses = sinks.finish("completed", {"final": {"val/ensemble/qwk": 0.5}})
    assert statuses["mlflow"].startswith("FileNotFoundError")
    assert client_for(run).get_run(str(sink.run_id)).info.status == "FAILED"
    assert json.loads((run.run_dir / "summary.json").read_text())["status"] == "completed"
