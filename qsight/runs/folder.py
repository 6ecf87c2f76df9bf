"""Reading run folders: status, timing, metrics, spec and per-stage epochs of one run."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from qsight.errors import BadInputError
from qsight.runs.layout import (
    DEFAULT_MONITOR,
    DEFAULT_MONITOR_MODE,
    END_STATUSES,
    RunLayout,
    best_epoch,
    lock_is_live,
    read_lock,
)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _pair(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(x, int | float) for x in value)


@dataclass(frozen=True)
class StageEpochs:
    """One stage's validation epochs (counted from 1) and which of them was best by its monitor."""

    name: str
    epochs: tuple[int, ...]
    best: int | None
    monitor: str
    best_value: float | None = None

    @property
    def last(self) -> int | None:
        return self.epochs[-1] if self.epochs else None


class RunFolder:
    """A run folder (``<root>/runs/<experiment>/<run-id>``), read lazily and never written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.layout = RunLayout(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def experiment(self) -> str:
        name = self.spec.get("name")
        return str(name) if name else self.path.parent.name

    @cached_property
    def summary(self) -> dict[str, Any] | None:
        return _read_json(self.layout.summary)

    @cached_property
    def environment(self) -> dict[str, Any]:
        return _read_json(self.layout.environment) or {}

    @cached_property
    def lock(self) -> dict[str, Any] | None:
        return read_lock(self.path)

    @cached_property
    def spec(self) -> dict[str, Any]:
        try:
            return tomllib.loads(self.layout.spec.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return {}

    @cached_property
    def metrics(self) -> list[dict[str, Any]]:
        """The lines of metrics.jsonl (a line cut short by a kill is skipped)."""
        path = self.layout.metrics
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    @property
    def status(self) -> str:
        """running (a live process holds the lock), completed, failed or interrupted.

        A lock left by a process that is gone means the run was killed: interrupted.
        """
        lock = self.lock
        if lock is not None:
            return "running" if lock_is_live(lock) else "interrupted"
        status = (self.summary or {}).get("status")
        return str(status) if status in END_STATUSES else "interrupted"

    @property
    def finished(self) -> bool:
        """Completed or failed: nothing will resume it, so it may be pruned."""
        return self.status in ("completed", "failed")

    @property
    def started(self) -> datetime | None:
        """When the run started (its lock, its summary, else spec.toml's time)."""
        for source in (self.lock, self.summary):
            stamp = (source or {}).get("started")
            if isinstance(stamp, str):
                try:
                    return datetime.fromisoformat(stamp)
                except ValueError:
                    pass
        spec = self.layout.spec
        return datetime.fromtimestamp(spec.stat().st_mtime, UTC) if spec.is_file() else None

    @property
    def seconds(self) -> float | None:
        """Wall time of the (last attempt of the) run, from summary.json."""
        value = (self.summary or {}).get("seconds")
        return float(value) if isinstance(value, int | float) else None

    @property
    def final(self) -> dict[str, float]:
        """The final validation metrics (summary.json, else the last metrics line)."""
        final = (self.summary or {}).get("final")
        if isinstance(final, dict) and final:
            return {k: v for k, v in final.items() if isinstance(v, int | float)}
        for row in reversed(self.metrics):
            if any(k.startswith("val/") for k in row):
                return {k: v for k, v in row.items() if "/" in k and isinstance(v, int | float)}
        return {}

    @property
    def test(self) -> dict[str, float]:
        """The test split's metrics (``test/<head>/<metric>``) from summary.json; empty without a test split."""
        test = (self.summary or {}).get("test")
        return {k: v for k, v in test.items() if isinstance(v, int | float)} if isinstance(test, dict) else {}

    @property
    def test_ci(self) -> dict[str, tuple[float, float]]:
        """Bootstrap intervals of the test metrics (``test/<head>/<metric>`` → (low, high))."""
        ci = (self.summary or {}).get("test_ci")
        if not isinstance(ci, dict):
            return {}
        return {k: (float(v[0]), float(v[1])) for k, v in ci.items() if _pair(v)}

    @property
    def test_paired(self) -> dict[str, dict[str, Any]]:
        """Paired QWK differences of every two heads on the test split (``<a>-vs-<b>``)."""
        paired = (self.summary or {}).get("test_paired")
        return {str(k): v for k, v in paired.items() if isinstance(v, dict)} if isinstance(paired, dict) else {}

    @property
    def parameters(self) -> dict[str, int]:
        """Parameter count per head, from summary.json."""
        counts = (self.summary or {}).get("parameters")
        return {str(k): int(v) for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, dict) else {}

    @property
    def quantum_costs(self) -> dict[str, dict[str, Any]]:
        """The circuit cost report per quantum head, from summary.json."""
        costs = (self.summary or {}).get("quantum")
        return {str(k): v for k, v in costs.items() if isinstance(v, dict)} if isinstance(costs, dict) else {}

    def stage_epochs(self) -> list[StageEpochs]:
        """Per stage, in spec order: its validation epochs and the best one by the stage's monitor."""
        out = []
        for stage in self._stage_specs():
            name = str(stage.get("name"))
            monitor = str(stage.get("monitor", DEFAULT_MONITOR))
            mode = str(stage.get("monitor_mode", DEFAULT_MONITOR_MODE))
            values: dict[int, float] = {}
            for row in self.metrics:
                if row.get("stage") == name and isinstance(row.get(monitor), int | float):
                    values[int(row["epoch"])] = float(row[monitor])
            epochs = sorted(values) or self._epoch_folders(name)
            best = best_epoch(values, mode)
            out.append(StageEpochs(name, tuple(epochs), best, monitor, None if best is None else values[best]))
        return out

    def _stage_specs(self) -> list[dict[str, Any]]:
        stages = self.spec.get("stages")
        if isinstance(stages, list) and stages:
            return [s for s in stages if isinstance(s, dict)]
        viz = self.layout.visualizations
        return [{"name": p.name} for p in sorted(viz.iterdir())] if viz.is_dir() else []

    def _epoch_folders(self, stage: str) -> list[int]:
        return [e for s, e, _ in self.epoch_dirs() if s == stage]

    def epoch_dirs(self) -> list[tuple[str, int, Path]]:
        """Every ``visualizations/<stage>/epoch_<NN>`` folder as (stage, epoch, path): stages in spec
        order (others after, by name), epochs ascending."""
        root = self.layout.visualizations
        if not root.is_dir():
            return []
        order = [str(s.get("name")) for s in self._stage_specs()]
        stages = sorted((p for p in root.iterdir() if p.is_dir()),
                        key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
        found: list[tuple[str, int, Path]] = []
        for stage in stages:
            found += [(stage.name, e, p) for e, p in self.layout.epoch_dirs(stage.name)]
        return found


def is_run_folder(path: Path) -> bool:
    """A folder holding a run's spec.toml."""
    return RunLayout(path).spec.is_file()


def find_runs(root: Path) -> list[RunFolder]:
    """Every run under a reports root (``<root>/runs/*/*``), newest first."""
    if not root.is_dir():
        raise BadInputError(f"--root {root}: no such folder")
    base = root / "runs" if (root / "runs").is_dir() else root
    found = [RunFolder(p) for p in _candidates(base) if is_run_folder(p)]
    stamp = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda r: (r.started or stamp, r.run_id), reverse=True)


def _candidates(base: Path) -> Iterator[Path]:
    if is_run_folder(base):
        yield base
        return
    for child in sorted(base.iterdir()):
        if child.is_dir():
            yield child
            yield from (g for g in sorted(child.iterdir()) if g.is_dir())


def open_run(ref: str, root: Path) -> RunFolder:
    """A run named by its folder path, or by its run id (or a unique prefix of it) under `root`."""
    path = Path(ref)
    if path.is_dir():
        if not is_run_folder(path):
            raise BadInputError(f"{ref}: not a qsight run folder (no spec.toml)")
        return RunFolder(path)
    if not root.is_dir():
        raise BadInputError(f"{ref}: no such run folder (and no reports root {root} to look in)")
    matches = [r for r in find_runs(root) if r.run_id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise BadInputError(f"{ref}: no such run folder, and no run id under {root} starts with it")
    names = ", ".join(r.run_id for r in matches[:5])
    raise BadInputError(f"{ref}: ambiguous run id under {root} ({len(matches)} runs: {names}...)")
