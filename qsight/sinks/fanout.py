"""SinkSet: the local sink first, then the others; failures isolated per sink."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qsight.errors import RunFailedError
from qsight.sinks.base import RunInfo, Sink
from qsight.sinks.local import LocalSink
from registry import Params

log = logging.getLogger("qsight.sinks")
OK = "ok"


def describe(exc: BaseException) -> str:
    """'ConnectionError: ...' on one line, shortened."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


class SinkSet:
    """Forwards every call to all sinks; a failing sink is reported once and disabled.

    A strict sink's failure raises `RunFailedError` (after being recorded). The
    local sink is always first and its `finish` is always attempted, so
    summary.json is written whatever happened to the others; a sink disabled after
    it started still gets a best-effort `finish("failed")`, so its run is not left running.
    """

    def __init__(self, local: LocalSink, others: list[Sink] | None = None) -> None:
        self.local = local
        self.sinks: list[Sink] = [local, *(others or [])]
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate sink names: {names}")
        self.statuses: dict[str, str] = {s.name: OK for s in self.sinks}
        self._started: set[str] = set()  # sinks whose start succeeded: they have a run to close
        self._finished = False

    def active(self) -> list[Sink]:
        """Sinks not disabled by a failure."""
        return [s for s in self.sinks if self.statuses[s.name] == OK]

    def _call(self, sink: Sink, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:
            self.statuses[sink.name] = describe(exc)
            if sink.strict:
                raise RunFailedError(f"sink {sink.name!r} failed: {describe(exc)}") from exc
            log.warning("sink %r failed and is disabled for the rest of the run: %s", sink.name, describe(exc))

    def _each(self, method: str, *args: Any) -> None:
        for sink in self.active():
            self._call(sink, getattr(sink, method), *args)

    def start(self, run: RunInfo) -> None:
        """Start every sink (local first); after a strict failure, finish as failed and raise."""
        try:
            for sink in self.active():
                self._call(sink, sink.start, run)
                if self.statuses[sink.name] == OK:
                    self._started.add(sink.name)
        except RunFailedError:
            self.finish("failed", {})
            raise

    def write_environment(self, extra: Mapping[str, Any]) -> None:
        """Merge `extra` (e.g. the quantum sampler's description) into environment.json."""
        if self.statuses[self.local.name] == OK:
            self._call(self.local, self.local.write_environment, extra)

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None:
        """Metrics at a global step; `context` carries at least `stage` and `epoch`."""
        self._each("log_metrics", metrics, step, context)

    def log_image(self, key: str, path: Path, step: int) -> None:
        """A PNG already written in the run folder."""
        self._each("log_image", key, Path(path), step)

    def log_table(self, key: str, path: Path, step: int) -> None:
        """A CSV already written in the run folder."""
        self._each("log_table", key, Path(path), step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file such as a checkpoint."""
        self._each("log_artifact", Path(path), artifact_path)

    def finish(self, status: str, summary: Mapping[str, Any]) -> dict[str, str]:
        """Finish the others, then the local sink (summary.json with the sink statuses).

        Returns the statuses; raises `RunFailedError` afterwards if a strict sink failed
        while finishing. Calling it twice does nothing the second time.
        """
        if self._finished:
            return dict(self.statuses)
        self._finished = True
        strict_error: RunFailedError | None = None
        for sink in [s for s in self.sinks if s is not self.local]:
            if self.statuses[sink.name] != OK:
                if sink.name in self._started:
                    self._close_failed(sink, {**summary, "sinks": dict(self.statuses)})
                continue
            try:
                self._call(sink, sink.finish, status, {**summary, "sinks": dict(self.statuses)})
            except RunFailedError as exc:
                strict_error = strict_error or exc
        self._call(self.local, self.local.finish, status, {**summary, "sinks": dict(self.statuses)})
        if strict_error is not None:
            raise strict_error
        return dict(self.statuses)

    @staticmethod
    def _close_failed(sink: Sink, summary: Mapping[str, Any]) -> None:
        """Best effort: a sink disabled by a failure still closes its run, as failed (it misses data)."""
        try:
            sink.finish("failed", summary)
        except Exception as exc:
            log.debug("sink %r could not close its run after failing: %s", sink.name, describe(exc))


def build_sinks(spec_sinks: Mapping[str, Params], run: RunInfo | None = None) -> SinkSet:
    """The SinkSet for a spec's ``[sinks.<label>]`` tables, a local sink added when absent.

    With `run`, the set is also started (raises `RunFailedError` if a strict sink fails).
    """
    from qsight.components import SINKS

    local: LocalSink | None = None
    others: list[Sink] = []
    for label, params in spec_sinks.items():
        sink = SINKS.get(str(getattr(params, "type", label))).build(params)
        sink.name = label
        if isinstance(sink, LocalSink) and local is None:
            local = sink
        else:
            others.append(sink)
    sinks = SinkSet(local or LocalSink(), others)
    if run is not None:
        sinks.start(run)
    return sinks
