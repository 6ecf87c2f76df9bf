"""The interface every sink implements, and a no-op base to build sinks on."""

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
    spec: Mapping[str, Any]  # the resolved spec as TOML-ready data (qsight.config.toml_io.spec_data)
    resumed: bool = False  # this process continues the folder's earlier run (`--resume`): sinks reopen theirs
    dry_run: bool = False  # a dry run (one batch per stage): sinks mark their run as such


@runtime_checkable
class Sink(Protocol):
    """Receives a run's metrics and artifacts. Artifacts are already written locally.

    `name` is the spec's label for the sink (``[sinks.<name>]``); `strict` makes
    its failures fatal. `finish` must work after any earlier failure.
    """

    name: str
    strict: bool

    def start(self, run: RunInfo) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None: ...

    def log_image(self, key: str, path: Path, step: int) -> None: ...

    def log_table(self, key: str, path: Path, step: int) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def finish(self, status: str, summary: Mapping[str, Any]) -> None: ...


class BaseSink:
    """A sink that ignores everything; subclasses override what they handle."""

    def __init__(self, name: str, strict: bool = False) -> None:
        self.name = name
        self.strict = strict

    def start(self, run: RunInfo) -> None:
        """Remember nothing by default."""

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None:
        """Ignore metrics by default."""

    def log_image(self, key: str, path: Path, step: int) -> None:
        """Ignore images by default."""

    def log_table(self, key: str, path: Path, step: int) -> None:
        """Ignore tables by default."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Ignore artifacts by default."""

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        """Nothing to close by default."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, strict={self.strict})"
