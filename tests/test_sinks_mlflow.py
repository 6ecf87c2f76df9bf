"""The mlflow sink against the default sqlite store and a real `mlflow server`, and its failures."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from qsight.errors import RunFailedError
from qsight.sinks import MlflowParams, RunInfo, SinkSet
from qsight.sinks.local import LocalSink
from qsight.sinks.mlflow_sink import MlflowSink, flatten
from tests.helpers import sink_artifacts

SPEC: dict[str, Any] = {
    "name": "demo",
    "seed": 5,
    "train": {"batch_size": 8, "limit_batches": "off"},
    "stages": [{"name": "classical", "heads": ["global", "compressed"], "lr": 0.001}],
    "description": "x" * 7000,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real tracking server on 127.0.0.1 (sqlite store, proxied artifacts); always stopped."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
           "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url, proc
    finally:
        stop(proc)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError("mlflow server did not become healthy")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal the server's process group (it was started in its own session); SIGKILL if slow."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(root) as (url, _proc):
        yield url, root


@pytest.fixture(autouse=True)
def _no_ambient_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def new_run(tmp_path: Path, run_id: str = "r1") -> RunInfo:
    root = tmp_path / "reports"
    return RunInfo("demo", run_id, root / "runs" / "demo" / run_id, root, SPEC)


def train_like(sinks: SinkSet, files: dict[str, Path], epochs: range = range(1, 3)) -> None:
    """What the trainer does: per-step losses, then validation metrics and artifacts per epoch."""
    for epoch in epochs:
        ctx = {"stage": "classical", "epoch": epoch}
        sinks.log_metrics({"train/global/loss": 1.0 / epoch}, 10 * epoch - 5, ctx)
        sinks.log_metrics({"val/ensemble/qwk": 0.25 * epoch, "val/global/accuracy": 0.5}, 10 * epoch, ctx)
        sinks.log_image("classical/confusion_ensemble", files["png"], 10 * epoch)
        sinks.log_table("classical/confidence", files["csv"], 10 * epoch)


def finish(sinks: SinkSet, files: dict[str, Path], status: str = "completed") -> dict[str, str]:
    sinks.log_artifact(files["ckpt"], "checkpoints")
    return sinks.finish(status, {"final": {"val/ensemble/qwk": 0.5}, "best": {}, "stages": ["classical"]})


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def check_run(client: MlflowClient, sink: MlflowSink, status: str, tmp: Path) -> None:
    """Everything the run should hold when read back."""
    assert sink.run_id is not None
    run_id = sink.run_id
    run = client.get_run(run_id)
    assert run.info.run_name == "r1" and run.info.status == status
    assert client.get_experiment(run.info.experiment_id).name == "demo"
    params = run.data.params
    assert params["train.batch_size"] == "8" and params["train.limit_batches"] == "off"
    assert params["stages.0.heads"] == '["global", "compressed"]' and len(params["description"]) == 6000
    history = client.get_metric_history(run_id, "val/ensemble/qwk")
    assert sorted((m.step, m.value) for m in history) == [(10, 0.25), (20, 0.5)]
    assert [m.step for m in client.get_metric_history(run_id, "train/global/loss")] == [5, 15]
    paths = artifact_paths(client, run_id)
    assert {"spec.toml", "summary.json", "checkpoints/stage-classical.pt",
            "tables/classical_confidence_step10.json"} <= paths
    assert len([p for p in paths if p.startswith("images/classical~confusion_ensemble+step+20")]) >= 1
    assert "tables/classical_confidence_step20.json" in run.data.tags["mlflow.loggedArtifacts"]
    local = client.download_artifacts(run_id, "tables/classical_confidence_step20.json", str(tmp))
    table = json.loads(Path(local).read_text())
    assert table["columns"] == ["id", "label", "pred", "confidence"] and [r[1] for r in table["data"]] == [0, 3]


@pytest.mark.slow
def test_default_sqlite_store(tmp_path: Path) -> None:
    run = new_run(tmp_path)
    files = sink_artifacts(run.run_dir)
    sink = MlflowSink(MlflowParams())
    sinks = SinkSet(LocalSink(), [sink])
    sinks.start(run)
    train_like(sinks, files)
    assert finish(sinks, files)["mlflow"] == "ok"

    root = run.reports_root.resolve()
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    check_run(client, sink, "FINISHED", tmp_path)
    exp = client.get_experiment_by_name("demo")
    assert exp is not None and exp.artifact_location == (root / "mlartifacts").as_uri()
    assert (root / "mlartifacts").is_dir()


@pytest.mark.slow
def test_resumed_run_continues_its_mlflow_run(tmp_path: Path) -> None:
    run = new_run(tmp_path)
    files = sink_artifacts(run.run_dir)
    first, second = MlflowSink(MlflowParams()), MlflowSink(MlflowParams())
    sinks = SinkSet(LocalSink(), [first])
    sinks.start(run)
    train_like(sinks, files, range(1, 2))
    sinks.finish("interrupted", {})
    sinks = SinkSet(LocalSink(), [second])
    sinks.start(dataclasses.replace(run, resumed=True))
    train_like(sinks, files, range(2, 3))
    assert finish(sinks, files)["mlflow"] == "ok"
    assert first.run_id == second.run_id and first.run_id is not None
    client = MlflowClient(tracking_uri=f"sqlite:///{run.reports_root.resolve() / 'mlflow.db'}")
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(first.run_id, "val/ensemble/qwk")] == [10, 20]


@pytest.mark.slow
def test_real_server(server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = server
    run = new_run(tmp_path)
    files = sink_artifacts(run.run_dir)
    sink = MlflowSink(MlflowParams(tracking_uri=url))
    sinks = SinkSet(LocalSink(), [sink])
    sinks.start(run)
    train_like(sinks, files)
    assert finish(sinks, files, "failed")["mlflow"] == "ok"
    check_run(MlflowClient(tracking_uri=url), sink, "FAILED", tmp_path)
    assert list((root / "artifacts").rglob("stage-classical.pt"))  # proxied to the server's destination
    assert not (run.reports_root / "mlflow.db").exists()


@pytest.mark.slow
def test_env_uri_is_used_and_interrupted_maps_to_killed(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    run = new_run(tmp_path, "r-env")
    sink = MlflowSink(MlflowParams())
    sinks = SinkSet(LocalSink(), [sink])
    sinks.start(run)
    sinks.finish("interrupted", {})
    assert MlflowClient(tracking_uri=url).get_run(str(sink.run_id)).info.status == "KILLED"


def assert_local_intact(run: RunInfo, steps: int) -> dict[str, Any]:
    lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == steps
    assert (run.run_dir / "spec.toml").is_file() and (run.run_dir / "environment.json").is_file()
    summary: dict[str, Any] = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["sinks"]["local"] == "ok"
    return summary


def test_dead_server_is_reported_once_and_training_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = new_run(tmp_path)
    files = sink_artifacts(run.run_dir)
    sinks = SinkSet(LocalSink(), [MlflowSink(MlflowParams(tracking_uri=f"http://127.0.0.1:{free_port()}"))])
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="qsight.sinks"):
        sinks.start(run)
        train_like(sinks, files)
        statuses = finish(sinks, files)
    assert time.monotonic() - began < 30
    assert len([r for r in caplog.records if r.name == "qsight.sinks"]) == 1
    summary = assert_local_intact(run, steps=4)
    assert summary["sinks"]["mlflow"] == statuses["mlflow"] != "ok"
    assert "Connection" in summary["sinks"]["mlflow"] or "refused" in summary["sinks"]["mlflow"]


@pytest.mark.slow
def test_server_killed_mid_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = new_run(tmp_path)
    files = sink_artifacts(run.run_dir)
    with mlflow_server(tmp_path / "server") as (url, proc):
        sink = MlflowSink(MlflowParams(tracking_uri=url, timeout=5))
        sinks = SinkSet(LocalSink(), [sink])
        with caplog.at_level("WARNING", logger="qsight.sinks"):
            sinks.start(run)
            train_like(sinks, files, range(1, 2))
            stop(proc, signal.SIGKILL)
            train_like(sinks, files, range(2, 4))
            statuses = finish(sinks, files)
    assert statuses["mlflow"] != "ok"
    assert len([r for r in caplog.records if r.name == "qsight.sinks"]) == 1
    summary = assert_local_intact(run, steps=6)
    assert summary["sinks"]["mlflow"] == statuses["mlflow"]
    assert files["png"].is_file() and files["ckpt"].is_file()


def test_strict_sink_on_dead_server_fails_the_run(tmp_path: Path) -> None:
    run = new_run(tmp_path)
    params = MlflowParams(tracking_uri=f"http://127.0.0.1:{free_port()}", strict=True)
    sinks = SinkSet(LocalSink(), [MlflowSink(params)])
    with pytest.raises(RunFailedError, match="mlflow"):
        sinks.start(run)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["sinks"]["mlflow"] != "ok"


def test_flatten_makes_dotted_mlflow_params() -> None:
    flat = flatten({"a": {"b": 1, "c": None, "d": [1, 2]}, "s": [{"n": "x"}], "k:y": "v" * 7000})
    assert flat == {"a.b": "1", "a.d": "[1, 2]", "s.0.n": "x", "k_y": "v" * 6000}
