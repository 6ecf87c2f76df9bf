"""The interface every sink implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class RunInfo:
    """Identity and place of one qsight run."""

    experiment: str  # the spec's name
    run_id: str
    run_dir: Path
    reports_root: Path
    spec: Mapping[str, Any]  # the resolved spec, as plain data


@runtime_checkable
class Sink(Protocol):
    """Receives a run's metrics and artifacts. Artifacts are already written locally."""

    name: str
    strict: bool

    def start(self, run: RunInfo) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None: ...

    def log_image(self, key: str, path: Path, step: int) -> None: ...

    def log_table(self, key: str, path: Path, step: int) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def finish(self, status: str, summary: Mapping[str, Any]) -> None: ...
