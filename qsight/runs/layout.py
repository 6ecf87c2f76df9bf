"""The run-folder contract, in one place: file names, epoch folders, atomic writes, the lock, the best epoch.

Writers (sinks, training, checkpoints) and readers (``qsight runs``, the report page) all go through
this module. Cheap to import.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from qsight.metric_names import DEFAULT_MONITOR, DEFAULT_MONITOR_MODE

SPEC = "spec.toml"
ENVIRONMENT = "environment.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOCK = "run.lock"
ERROR_LOG = "error.log"
RUN_LOG = "run.log"
CHECKPOINTS = "checkpoints"
VISUALIZATIONS = "visualizations"
EVALUATIONS = "evaluations"
EXPORTS = "exports"
TEST = "test"  # visualizations/test: the end-of-run test split (so no stage may be named "test")
INTERVALS = "intervals.csv"
PAIRED = "paired.csv"

#: What a run folder's status can be: ``running`` while a live process holds the lock.
STATUSES = ("running", "completed", "failed", "interrupted")
#: What a finished process writes as summary.json's ``status``.
END_STATUSES = ("completed", "failed", "interrupted")

__all__ = [
    "DEFAULT_MONITOR",
    "DEFAULT_MONITOR_MODE",
    "END_STATUSES",
    "STATUSES",
    "RunLayout",
    "atomic_writer",
    "best_epoch",
    "epoch_folder_name",
    "improves",
    "lock_is_live",
    "parse_epoch_folder",
    "read_lock",
    "remove_lock",
    "write_atomic",
    "write_lock",
]

_EPOCH = re.compile(r"^epoch_(\d+)$")


def epoch_folder_name(epoch: int) -> str:
    """``epoch_03`` for the third epoch (epochs are counted from 1 everywhere a user sees them)."""
    return f"epoch_{epoch:02d}"


def parse_epoch_folder(name: str) -> int | None:
    """The epoch (from 1) of an ``epoch_<NN>`` folder name; None for other names."""
    match = _EPOCH.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class RunLayout:
    """The paths inside one run folder."""

    root: Path

    @property
    def spec(self) -> Path:
        return self.root / SPEC

    @property
    def environment(self) -> Path:
        return self.root / ENVIRONMENT

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def error_log(self) -> Path:
        return self.root / ERROR_LOG

    @property
    def run_log(self) -> Path:
        return self.root / RUN_LOG

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def visualizations(self) -> Path:
        return self.root / VISUALIZATIONS

    @property
    def evaluations(self) -> Path:
        """``evaluations/``: one folder per re-evaluation of the trained run."""
        return self.root / EVALUATIONS

    def evaluation_dir(self, evaluation_id: str) -> Path:
        """``evaluations/<id>``."""
        return self.evaluations / evaluation_id

    @property
    def exports(self) -> Path:
        """``exports/``: default place of exported models (ONNX, torch.export)."""
        return self.root / EXPORTS

    @property
    def test_dir(self) -> Path:
        """``visualizations/test``: the test split's confusion matrices, confidence table and intervals."""
        return self.visualizations / TEST

    def stage_dir(self, stage: str) -> Path:
        """``visualizations/<stage>``."""
        return self.visualizations / stage

    def epoch_dir(self, stage: str, epoch: int) -> Path:
        """``visualizations/<stage>/epoch_<NN>`` for `epoch` counted from 1."""
        return self.stage_dir(stage) / epoch_folder_name(epoch)

    def epoch_dirs(self, stage: str) -> list[tuple[int, Path]]:
        """The existing epoch folders of one stage as (epoch, path), ascending."""
        folder = self.stage_dir(stage)
        if not folder.is_dir():
            return []
        found = [(parse_epoch_folder(p.name), p) for p in folder.iterdir() if p.is_dir()]
        return sorted((e, p) for e, p in found if e is not None)


# -- atomic writes ----------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: Path, mode: Literal["w", "wb"] = "wb") -> Iterator[IO[Any]]:
    """Write `path` all at once: a uniquely named temporary file beside it, fsync, then a rename.

    Readers see the old file or the new one, never half of one; the file gets the usual mode of new
    files (0644 under a 022 umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if mode == "w" else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path, "w" if isinstance(data, str) else "wb") as fh:
        fh.write(data)


# -- the lock ---------------------------------------------------------------------------------------


def write_lock(run_dir: Path) -> None:
    """Mark a run as in progress: ``run.lock`` holds the pid, host and start time."""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(UTC).isoformat()}
    write_atomic(RunLayout(run_dir).lock, json.dumps(info) + "\n")


def remove_lock(run_dir: Path) -> None:
    """The run has ended (whatever its status)."""
    RunLayout(run_dir).lock.unlink(missing_ok=True)


def read_lock(run_dir: Path) -> dict[str, Any] | None:
    """The lock's content, or None when there is no (readable) lock."""
    try:
        data = json.loads(RunLayout(run_dir).lock.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def lock_is_live(lock: Mapping[str, Any]) -> bool:
    """Whether the process that wrote `lock` still runs (a lock from another host counts as live)."""
    if lock.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(lock.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


# -- the best epoch ---------------------------------------------------------------------------------


def improves(value: float | None, best: float | None, mode: str = DEFAULT_MONITOR_MODE) -> bool:
    """Whether `value` beats `best` strictly (a missing or NaN value never does; any value beats none)."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def best_epoch(values: Mapping[int, float], mode: str = DEFAULT_MONITOR_MODE) -> int | None:
    """The best epoch by the training rule: strict improvement, so the first of equal bests wins."""
    best: int | None = None
    for epoch in sorted(values):
        if improves(values[epoch], None if best is None else values[best], mode):
            best = epoch
    return best
