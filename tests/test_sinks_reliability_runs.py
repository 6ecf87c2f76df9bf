"""Whole `qsight run`s against the sinks: runs starting together, a long stage, a kill and a resume.

Real parts: `python -m qsight`, an MLflow sqlite store read back with `MlflowClient`, WandB offline files.
"""

from __future__ import annotations

import json
import os
import signal
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from mlflow import MlflowClient

from tests.helpers import ROOT, cli, cli_env, history, read_records, start_cli, summary, tiny_spec
from tests.launcher import launch_code

pytestmark = pytest.mark.slow
CLASSICAL = {"name": "classical", "heads": ["global"], "train": ["backbone", "heads.global"], "lr": 3e-3}


def spec_with(tmp: Path, sinks: dict[str, Any], epochs: int, **changes: Any) -> Path:
    """A one-stage tiny spec (no Grad-CAM) with the given sinks."""
    small = {"data__train_size": 16, "data__val_size": 8, "train__limit_batches": 1, "explain__enabled": False}
    path = tiny_spec(tmp, sinks=True, stages=[{**CLASSICAL, "epochs": epochs}], **{**small, **changes})
    raw = tomllib.loads(path.read_text())
    raw["sinks"] = sinks
    path.write_text(tomli_w.dumps(raw))
    return path


def store(reports: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{reports.resolve() / 'mlflow.db'}")


def mlflow_runs(client: MlflowClient) -> list[Any]:
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    return list(client.search_runs([exp.experiment_id], max_results=100))


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return out


SINK_PROCESS = """
import json, sys, time
from pathlib import Path
from PIL import Image
from qsight.sinks import MlflowParams, RunInfo, SinkSet
from qsight.sinks.local import LocalSink
from qsight.sinks.mlflow_sink import MlflowSink

root, name = Path(sys.argv[1]), sys.argv[2]
run = RunInfo("tiny", name, root / "runs" / "tiny" / name, root, {"name": "tiny"})
run.run_dir.mkdir(parents=True)
csv, png, ckpt = run.run_dir / "confidence.csv", run.run_dir / "confusion.png", run.run_dir / "best.pt"
csv.write_text("id,label,pred\\na,0,1\\n")
Image.new("RGB", (8, 8)).save(png)
ckpt.write_bytes(b"0" * 64)
(root / f"ready-{name}").touch()
while not (root / "go").exists():
    time.sleep(0.002)
sinks = SinkSet(LocalSink(), [MlflowSink(MlflowParams())])
sinks.start(run)
sinks.log_metrics({"val/ensemble/qwk": 0.5}, 1, {"stage": "classical", "epoch": 1})
sinks.log_image("classical/confusion/ensemble", png, 1)
sinks.log_table("classical/confidence", csv, 1)
sinks.log_artifact(ckpt, "checkpoints")
print(json.dumps(sinks.finish("completed", {"final": {"val/ensemble/qwk": 0.5}})))
"""


def test_four_sink_processes_released_together_on_a_fresh_store(tmp_path: Path) -> None:
    """4 processes start the MLflow sink at the same instant (a file barrier), 3 rounds, a fresh store each.

    Fails on the old code: MLflow's table creation races (`duplicate column name: step`,
    `table _alembic_tmp_... already exists`) and the store can break for good.
    """
    env = cli_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    for rnd in range(3):
        root = tmp_path / f"round{rnd}" / "reports"
        root.mkdir(parents=True)
        names = [f"r{i}" for i in range(4)]
        procs = [launch_code(SINK_PROCESS, str(root), n, cwd=ROOT, env=env) for n in names]
        deadline = time.time() + 300
        while not all((root / f"ready-{n}").exists() for n in names) and time.time() < deadline:
            time.sleep(0.05)
        (root / "go").touch()
        outputs = [p.communicate(timeout=300) for p in procs]
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0 and json.loads(out)["mlflow"] == "ok", (rnd, out, err[-2000:])
        client = store(root)
        runs = mlflow_runs(client)
        assert sorted(r.info.run_name for r in runs) == names
        for r in runs:
            assert r.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(r.info.run_id, "val/ensemble/qwk")] == [1]
            paths = artifact_paths(client, r.info.run_id)
            assert {"summary.json", "checkpoints/best.pt", "tables/classical_confidence_step1.json"} <= paths
            assert any(p.startswith("images/classical~confusion~ensemble+step+1+") for p in paths)


@pytest.mark.timeout(1200)
def test_four_runs_starting_together_on_a_fresh_store(tmp_path: Path) -> None:
    """4 whole `qsight run`s started at once on a fresh sqlite store all land in it.

    Each process reaches the store when its imports and data are ready, so whether they collide
    depends on the machine: the race itself is the test above's, which releases the sinks together
    (3 rounds). This one checks the whole command in that situation, in one round (3 took 2.5 minutes).
    """
    env = {"MLFLOW_TRACKING_URI": ""}
    for rnd in range(1):
        tmp = tmp_path / f"round{rnd}"
        tmp.mkdir()
        spec = spec_with(tmp, {"mlflow": {"type": "mlflow"}}, epochs=1)
        dirs = [tmp / "reports" / "runs" / "tiny" / f"r{i}" for i in range(4)]
        procs = [start_cli("run", str(spec), "--run-dir", str(d), env=env) for d in dirs]
        errors = [p.communicate(timeout=900)[1] for p in procs]
        for proc, err, run_dir in zip(procs, errors, dirs, strict=True):
            assert proc.returncode == 0, err[-2000:]
            assert summary(run_dir)["sinks"]["mlflow"] == "ok", (rnd, summary(run_dir)["sinks"], err[-2000:])
        client = store(tmp / "reports")
        runs = mlflow_runs(client)
        assert sorted(r.info.run_name for r in runs) == ["r0", "r1", "r2", "r3"]
        for r in runs:
            assert r.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(r.info.run_id, "val/ensemble/qwk")] == [1]
            paths = artifact_paths(client, r.info.run_id)
            assert {"spec.toml", "summary.json", "checkpoints/best.pt",
                    "tables/classical_confidence_step1.json"} <= paths  # fmt: skip


def test_110_epoch_stage_lands_whole_in_mlflow(tmp_path: Path) -> None:
    """Fails on the old code: after ~25 epochs the table tag outgrows MLflow's limit, the sink dies and
    the MLflow run stays RUNNING with points missing."""
    spec = spec_with(tmp_path, {"mlflow": {"type": "mlflow"}}, epochs=110)
    run_dir = tmp_path / "run"
    res = cli("run", str(spec), "--run-dir", str(run_dir), env={"MLFLOW_TRACKING_URI": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    assert summary(run_dir)["sinks"]["mlflow"] == "ok"
    client = store(tmp_path / "reports")
    (run,) = mlflow_runs(client)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    for key in ("val/ensemble/qwk", "val/global/accuracy", "train/total/loss"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(1, 111)), key
    tables = {p.path for p in client.list_artifacts(run_id, "tables")}
    images = [p.path for p in client.list_artifacts(run_id, "images")
              if p.path.endswith(".png") and not p.path.startswith("images/test~")]  # the test split's once
    for step in range(1, 111):
        assert f"tables/classical_confidence_step{step}.json" in tables
        assert f"tables/classical_confusion_counts_global_step{step}.json" in tables
    assert len(images) == 2 * 110  # confusion of the head and of the ensemble, every epoch


def _kill_in_epoch_2(spec: Path, run_dir: Path, env: dict[str, str]) -> None:
    """Start a run and SIGKILL it once two training steps of epoch 2 are logged (checkpoint: epoch 1)."""
    proc = start_cli("run", str(spec), "--run-dir", str(run_dir), env=env)
    metrics, deadline = run_dir / "metrics.jsonl", time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        lines = metrics.read_text().splitlines() if metrics.is_file() else []
        if sum('"epoch": 2' in line and "val/" not in line for line in lines) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def _points(client: MlflowClient, run_id: str, keys: list[str]) -> list[tuple[str, int, float]]:
    return sorted((k, int(m.step), float(m.value)) for k in keys for m in client.get_metric_history(run_id, k))


def _wandb_log_with_exit(run_dir: Path, timeout: float) -> tuple[list[Path], list[Any]] | None:
    """The run's transaction logs and the records of the one holding an exit record (polled: wandb-core
    may still be writing when the run's process has exited)."""
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda f: f.parent.name)
        ended = [r for r in map(read_records, files) if any(x.HasField("exit") for x in r)]
        if ended:
            return files, ended[-1]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def test_killed_and_resumed_run_continues_its_mlflow_and_wandb_runs(tmp_path: Path) -> None:
    """Killed mid-epoch 2, resumed from epoch 1's checkpoint: one MLflow run holding every point once
    with the values of metrics.jsonl, one W&B run id (one offline folder per process).

    10 steps an epoch, a training line every 3 (steps 3, 6, 9, 13, ...): no key is logged twice at one
    step by design. Fails on the old code: MLflow holds the steps of epoch 2 twice; the resumed process
    starts a second W&B run (another id).
    """
    from qsight.training.checkpoints import read_checkpoint

    spec = spec_with(
        tmp_path,
        {"mlflow": {"type": "mlflow"}, "wandb": {"type": "wandb"}},
        epochs=3,
        data__train_size=160,
        train__limit_batches=10,
        train__log_every=3,
    )
    env = {"MLFLOW_TRACKING_URI": ""}
    run_dir = tmp_path / "run"
    _kill_in_epoch_2(spec, run_dir, env)
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "last.pt").run_state.global_step
    client = store(tmp_path / "reports")
    (killed,) = mlflow_runs(client)
    logged = max(m.step for m in client.get_metric_history(killed.info.run_id, "train/total/loss"))
    assert logged > checkpoint, "MLflow got nothing after the checkpoint: the kill came too early"

    res = cli("run", "--resume", str(run_dir), env={"MLFLOW_TRACKING_URI": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    assert summary(run_dir)["status"] == "completed" and summary(run_dir)["sinks"]["mlflow"] == "ok"

    (run,) = mlflow_runs(client)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = sorted({k for line in lines for k in line if k.startswith(("train/total", "val/"))})
    expected = sorted((k, int(line["step"]), float(line[k])) for line in lines for k in keys if k in line)
    got = _points(client, run.info.run_id, keys)
    assert [(k, s) for k, s, _ in got] == [(k, s) for k, s, _ in expected]  # every point once
    assert [v for *_, v in got] == pytest.approx([v for *_, v in expected], abs=1e-6)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/ensemble/qwk")] == [10, 20, 30]

    wandb_id = json.loads((run_dir / "wandb" / "qsight-wandb.json").read_text())["id"]
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))  # one per process, named by start time
    assert len(folders) == 2 and all(f.name.endswith(f"-{wandb_id}") for f in folders), folders
    assert summary(run_dir)["sinks"]["wandb"] == "ok", (run_dir / "run.log").read_text()[-2000:]
    # one run id throughout; which folder's transaction log holds the resumed process's records, and when
    # wandb-core (its own process) has written the exit record, depend on W&B's flushing under load
    ended = _wandb_log_with_exit(run_dir, timeout=120.0)
    assert ended is not None, [(f, f.stat().st_size) for f in run_dir.glob("wandb/offline-run-*/*")]
    files, records = ended
    assert {f.name for f in files} == {f"run-{wandb_id}.wandb"}
    steps = [row["_step"] for row in history(records)]
    assert steps[0] == checkpoint + 3 and steps[-1] == 30  # the resumed process: from its checkpoint on
    (exit_rec,) = (r.exit for r in records if r.HasField("exit"))
    assert exit_rec.exit_code == 0
