"""The run folder's bookkeeping: spec.toml, environment.json, metrics.jsonl, summary.json."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from qsight.runs.layout import RunLayout, remove_lock, write_atomic, write_lock
from qsight.sinks.base import BaseSink, RunInfo
from qsight.sinks.environment import collect_environment

SUMMARY_KEYS = ("status", "final", "best", "stages", "sinks")


def json_safe(value: Any) -> Any:
    """Plain JSON data: NaN/inf become None, paths and unknown objects strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        return json_safe(item())
    return str(value)


class LocalSink(BaseSink):
    """Writes the run folder's bookkeeping files; images and tables are already there."""

    def __init__(self, name: str = "local", strict: bool = False, flush_every: int = 1) -> None:
        super().__init__(name, strict)
        self.flush_every = flush_every
        self.run: RunInfo | None = None
        self._metrics: IO[str] | None = None
        self._unflushed = 0

    @property
    def run_dir(self) -> Path:
        """The run folder (after `start`)."""
        if self.run is None:
            raise RuntimeError("local sink not started")
        return self.run.run_dir

    def start(self, run: RunInfo) -> None:
        """Create the folder; write spec.toml and environment.json; open metrics.jsonl (append)."""
        import tomli_w

        self.run = run
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_lock(run.run_dir)
        layout = RunLayout(run.run_dir)
        write_atomic(layout.spec, tomli_w.dumps(run.spec))
        self.write_environment({})
        self._metrics = layout.metrics.open("a", encoding="utf-8")

    def write_environment(self, extra: Mapping[str, Any]) -> None:
        """(Re)write environment.json, merging `extra` into any extra written before."""
        path = RunLayout(self.run_dir).environment
        merged: dict[str, Any] = {}
        if path.is_file():
            merged = dict(json.loads(path.read_text(encoding="utf-8")).get("extra", {}))
        merged.update(extra)
        seed = self.run.spec.get("seed") if self.run else None
        env = collect_environment(seed, merged)
        write_atomic(path, json.dumps(json_safe(env), indent=2) + "\n")

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None:
        """Append one line: stage, epoch, step, time, other context, then the metrics."""
        if self._metrics is None:
            raise RuntimeError("local sink not started")
        line = {"stage": context.get("stage"), "epoch": context.get("epoch"), "step": step}
        line.update({k: v for k, v in context.items() if k not in line})
        line["time"] = round(time.time(), 3)
        line.update(metrics)
        self._metrics.write(json.dumps(json_safe(line)) + "\n")
        self._unflushed += 1
        if self._unflushed >= self.flush_every:
            self._metrics.flush()
            self._unflushed = 0

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy a file from outside the run folder into it (under `artifact_path`)."""
        path = Path(path).resolve()
        if path.is_relative_to(self.run_dir.resolve()):
            return
        dest = self.run_dir / (artifact_path or "") / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(path, dest)

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        """Close metrics.jsonl and write summary.json (contract keys first); the lock goes whatever happens."""
        try:
            if self._metrics is not None:
                handle, self._metrics = self._metrics, None
                with contextlib.suppress(OSError):  # a full disk loses the last unflushed lines, not the summary
                    handle.close()
            self.write_summary(status, summary)
        finally:
            remove_lock(self.run_dir)

    def write_summary(self, status: str, summary: Mapping[str, Any]) -> None:
        """summary.json: status, final, best, stages, sinks, then any other keys given."""
        data: dict[str, Any] = {
            "status": status,
            "final": dict(summary.get("final", {})),
            "best": dict(summary.get("best", {})),
            "stages": list(summary.get("stages", [])),
            "sinks": dict(summary.get("sinks", {})),
        }
        data.update({k: v for k, v in summary.items() if k not in SUMMARY_KEYS})
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(RunLayout(self.run_dir).summary, json.dumps(json_safe(data), indent=2) + "\n")
