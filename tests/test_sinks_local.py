"""Local sink, console sink and the SinkSet's fault isolation (no remote services)."""

from __future__ import annotations

import io
import json
import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from qsight.components import SINKS
from qsight.errors import RunFailedError
from qsight.sinks import BaseSink, RunInfo, SinkSet, build_sinks
from qsight.sinks.console import ConsoleSink
from qsight.sinks.local import LocalSink
from tests.helpers import heavy_imports

SPEC: dict[str, Any] = {
    "name": "demo",
    "seed": 7,
    "model": {
        "heads": {"global": {"type": "linear", "input": "backbone"}},
        "neck": {"dim": 4, "hidden": "off"},
    },
    "stages": [{"name": "classical", "epochs": 2, "heads": ["global"], "grad_clip": "off"}],
}
SUMMARY = {"final": {"val/ensemble/qwk": 0.5}, "best": {"val/ensemble/qwk": 0.6}, "stages": ["classical"]}


def run_info(tmp_path: Path) -> RunInfo:
    root = tmp_path / "reports"
    return RunInfo("demo", "r1", root / "runs" / "demo" / "r1", root, SPEC)


class Recorder(BaseSink):
    """A working sink that remembers what it received."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls: list[str] = []

    def start(self, run: RunInfo) -> None:
        self.calls.append("start")

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None:
        self.calls.append(f"metrics@{step}")

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        self.calls.append(f"finish:{status}")


class Broken(Recorder):
    """Fails in `fail_in` (a method name)."""

    def __init__(self, name: str, fail_in: str, strict: bool = False) -> None:
        super().__init__(name)
        self.fail_in, self.strict = fail_in, strict

    def start(self, run: RunInfo) -> None:
        super().start(run)
        if self.fail_in == "start":
            raise ConnectionError("server unreachable")

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None:
        super().log_metrics(metrics, step, context)
        if self.fail_in == "log_metrics":
            raise OSError("disk full")


def test_local_sink_writes_the_run_folder(tmp_path: Path) -> None:
    run = run_info(tmp_path)
    outside = tmp_path / "extra.txt"
    outside.write_text("x")
    sinks = build_sinks({}, run)
    sinks.write_environment({"sampler": {"type": "torch-exact", "device": "cpu"}})
    sinks.log_metrics({"train/global/loss": 1.5}, 10, {"stage": "classical", "epoch": 1})
    sinks.log_metrics(
        {"val/ensemble/qwk": float("nan"), "val/global/accuracy": 0.25},
        20,
        {"stage": "classical", "epoch": 1},
    )
    sinks.log_artifact(outside, "notes")
    statuses = sinks.finish("completed", SUMMARY)

    assert statuses == {"local": "ok"}
    spec = tomllib.loads((run.run_dir / "spec.toml").read_text())
    assert spec == SPEC  # RunInfo.spec is TOML-ready data (off values spelled out), written as it is
    env = json.loads((run.run_dir / "environment.json").read_text())
    assert env["seed"] == 7 and env["extra"]["sampler"]["type"] == "torch-exact"
    assert env["python"].count(".") == 2 and env["packages"]["mlflow"] and "cuda" in env["devices"]
    assert env["git"] is None or len(env["git"]["commit"]) == 40
    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(x["stage"], x["epoch"], x["step"]) for x in lines] == [
        ("classical", 1, 10),
        ("classical", 1, 20),
    ]
    assert lines[0]["train/global/loss"] == 1.5 and lines[1]["val/ensemble/qwk"] is None
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert list(summary)[:5] == ["status", "final", "best", "stages", "sinks"]
    assert summary["status"] == "completed" and summary["best"] == SUMMARY["best"]
    assert summary["sinks"] == {"local": "ok"}
    assert (run.run_dir / "notes" / "extra.txt").read_text() == "x"


def test_environment_extra_merges_and_metrics_append_on_restart(tmp_path: Path) -> None:
    run = run_info(tmp_path)
    first = LocalSink()
    first.start(run)
    first.write_environment({"a": 1})
    first.log_metrics({"m/x/y": 1.0}, 1, {"stage": "s", "epoch": 1})
    first.finish("interrupted", {})
    second = LocalSink()
    second.start(run)
    second.write_environment({"b": 2})
    second.log_metrics({"m/x/y": 2.0}, 2, {"stage": "s", "epoch": 2})
    second.finish("completed", {})
    env = json.loads((run.run_dir / "environment.json").read_text())
    assert env["extra"] == {"a": 1, "b": 2}
    assert len((run.run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_builtin_sinks_are_registered_with_strict_params() -> None:
    assert {"local", "console", "wandb", "mlflow"} <= set(SINKS.names())
    for name in ("local", "console", "wandb", "mlflow"):
        assert SINKS.get(name).params().model_dump()["strict"] is False


def test_spec_sink_tables_build_labelled_sinks(tmp_path: Path) -> None:
    from pydantic import TypeAdapter

    from qsight.config.spec import SinkRef

    tables = {"screen": {"type": "console"}, "files": {"type": "local", "flush_every": 5}}
    sinks = build_sinks(TypeAdapter(dict[str, SinkRef]).validate_python(tables))
    assert [s.name for s in sinks.sinks] == ["files", "screen"]
    assert isinstance(sinks.local, LocalSink) and sinks.local.flush_every == 5


def test_importing_sinks_stays_light() -> None:
    assert heavy_imports("qsight.sinks", ("mlflow", "wandb", "torch", "rich")) == []


def test_console_prints_one_table_per_validation_epoch(tmp_path: Path) -> None:
    buf = io.StringIO()
    console = ConsoleSink(columns=("train_loss", "accuracy", "qwk"), file=buf)
    console.start(run_info(tmp_path))
    console.log_metrics({"train/global/loss": 0.9}, 5, {"stage": "classical", "epoch": 1})
    quiet = buf.getvalue()
    metrics = {
        "val/global/qwk": 0.7,
        "val/ensemble/qwk": 0.75,
        "val/ensemble/accuracy": 0.5,
        "train/global/loss": 0.9,
    }
    console.log_metrics(metrics, 10, {"stage": "classical", "epoch": 1})
    console.finish("failed", {"sinks": {"local": "ok", "mlflow": "ConnectionError: refused"}})
    text = buf.getvalue()
    assert "r1" in quiet and "loss" not in quiet
    table = text[len(quiet) :]
    assert "classical · epoch 1" in table and "0.7500" in table and "0.9000" in table
    assert table.index("global") < table.index("ensemble")  # ensemble last
    assert "failed" in text and "mlflow" in text and "refused" in text and "local" not in table.split("failed")[1]


def test_failing_sink_is_reported_once_and_disabled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = run_info(tmp_path)
    broken, fine = Broken("remote", "log_metrics"), Recorder("fine")
    sinks = SinkSet(LocalSink(), [broken, fine])
    with caplog.at_level(logging.WARNING, logger="qsight.sinks"):
        sinks.start(run)
        for step in (1, 2, 3):
            sinks.log_metrics({"val/x/acc": 0.1 * step}, step, {"stage": "s", "epoch": step})
        sinks.finish("completed", SUMMARY)
    warnings = [r for r in caplog.records if r.name == "qsight.sinks"]
    assert len(warnings) == 1 and "remote" in warnings[0].getMessage()
    assert broken.calls == ["start", "metrics@1", "finish:failed"]  # disabled, then its run closed as failed
    assert fine.calls == ["start", "metrics@1", "metrics@2", "metrics@3", "finish:completed"]
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["sinks"] == {"local": "ok", "remote": "OSError: disk full", "fine": "ok"}
    assert len((run.run_dir / "metrics.jsonl").read_text().splitlines()) == 3


def test_sink_failing_at_start_is_never_called_again(tmp_path: Path) -> None:
    run = run_info(tmp_path)
    broken = Broken("remote", "start")
    sinks = SinkSet(LocalSink(), [broken])
    sinks.start(run)
    sinks.log_metrics({"val/x/acc": 1.0}, 1, {"stage": "s", "epoch": 1})
    assert sinks.finish("failed", {})["remote"] == "ConnectionError: server unreachable"
    assert broken.calls == ["start"]
    assert json.loads((run.run_dir / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("fail_in", ["start", "log_metrics"])
def test_strict_sink_failure_fails_the_run(tmp_path: Path, fail_in: str) -> None:
    run = run_info(tmp_path)
    sinks = SinkSet(LocalSink(), [Broken("remote", fail_in, strict=True)])
    with pytest.raises(RunFailedError, match="remote"):
        sinks.start(run)
        sinks.log_metrics({"val/x/acc": 1.0}, 1, {"stage": "s", "epoch": 1})
    sinks.finish("failed", {})  # the trainer's cleanup; a no-op after a failed start
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["sinks"]["remote"] != "ok"


def test_duplicate_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        SinkSet(LocalSink(), [Recorder("local")])
