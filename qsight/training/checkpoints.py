"""Atomic checkpoints with everything needed to resume a stage exactly."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from qsight.errors import BadInputError
from qsight.runs.layout import RunLayout


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write with ``torch.save`` to a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by qsight; a missing or corrupt file is bad input."""
    if not path.is_file():
        raise BadInputError(f"{path}: checkpoint not found")
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise BadInputError(f"{path}: cannot read checkpoint: {exc}") from None
    for key in ("model", "stage", "epoch"):
        if key not in state:
            raise BadInputError(f"{path}: not a qsight checkpoint (no {key!r})")
    return state


class CheckpointStore:
    """``checkpoints/last.pt``, ``best.pt`` and ``stage-<name>.pt`` of one run."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = RunLayout(run_dir).checkpoints

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def stage(self, name: str) -> Path:
        return self.folder / f"stage-{name}.pt"

    def save(self, state: dict[str, Any], *, best: bool = False, stage_end: str | None = None) -> None:
        """Always ``last.pt``; also ``best.pt`` and the stage's file when asked."""
        save_atomic(state, self.last)
        if best:
            save_atomic(state, self.best)
        if stage_end is not None:
            save_atomic(state, self.stage(stage_end))
