"""The checkpoint format, in one place: what a checkpoint holds, writing it, reading it back.

A checkpoint is a dict of tensors and plain values (str, int, float, bool, None, and lists, tuples
and dicts of them): ``torch.load(weights_only=True)`` opens it, so opening one cannot run code.
It holds everything needed to resume a stage exactly: model, optimizer, schedule, AMP scaler,
RNG states, early stopping, the run state, and the stage and epoch it was written after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qsight.errors import BadInputError
from qsight.runs.layout import RunLayout, atomic_writer
from qsight.training.seeding import rng_state, set_rng_state
from qsight.training.state import EarlyStopping, RunState

#: Bumped when the content changes; a file of another version is refused (bad input).
FORMAT = 1
#: Every key a checkpoint has.
KEYS = ("format", "model", "optimizer", "scheduler", "scaler", "rng", "early_stopping", "run_state", "stage",
        "epoch")
_PLAIN = (str, int, float, bool, type(None))


@dataclass
class TrainingParts:
    """The live objects of one stage that a checkpoint saves and restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    early: EarlyStopping


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back (key and type checked)."""

    path: Path
    state: Mapping[str, Any]
    run_state: RunState

    @property
    def stage(self) -> str:
        return str(self.state["stage"])

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    @property
    def model(self) -> Mapping[str, Tensor]:
        model: Mapping[str, Tensor] = self.state["model"]
        return model

    def restore_model(self, model: nn.Module) -> None:
        """Load the model weights; a checkpoint of another model is bad input."""
        problems = state_mismatch(model.state_dict(), self.model)
        if problems:
            raise BadInputError(
                f"{self.path}: the checkpoint does not fit the model its spec.toml builds "
                f"(was spec.toml edited?): {'; '.join(problems)}"
            )
        model.load_state_dict(self.model)

    def restore_training(self, parts: TrainingParts) -> None:
        """Load optimizer, schedule, AMP scaler, early stopping and RNG states into `parts`."""
        parts.optimizer.load_state_dict(self.state["optimizer"])
        parts.scheduler.load_state_dict(self.state["scheduler"])
        if parts.scaler is not None and self.state["scaler"]:
            parts.scaler.load_state_dict(self.state["scaler"])
        parts.early = EarlyStopping.from_dict(self.state["early_stopping"])
        set_rng_state(self.state["rng"])


def checkpoint_state(parts: TrainingParts, run_state: RunState, stage: str) -> dict[str, Any]:
    """The dict written to disk: tensors and plain values only (anything else is a TypeError)."""
    state = {
        "format": FORMAT,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "rng": rng_state(),
        "early_stopping": parts.early.to_dict(),
        "run_state": run_state.to_dict(),
        "stage": stage,
        "epoch": run_state.epoch,
    }
    check_plain(state, "checkpoint")
    return state


def check_plain(value: Any, where: str) -> None:
    """Raise TypeError naming the first value that is neither a tensor nor plain (e.g. a numpy scalar)."""
    if isinstance(value, Tensor) or (type(value) in _PLAIN):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, _PLAIN):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}, not a plain value")
            check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
    else:
        raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__name__}: "
                        "a checkpoint holds tensors and plain values only")


def read_checkpoint(path: Path) -> Checkpoint:
    """Open a qsight checkpoint with ``weights_only=True``; a missing, corrupt or foreign file is bad input."""
    if not path.is_file():
        raise BadInputError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and weights-only refusals alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path}: cannot read checkpoint: {first}") from None
    if not isinstance(state, Mapping):
        raise BadInputError(f"{path}: not a qsight checkpoint (not a dict)")
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise BadInputError(f"{path}: not a qsight checkpoint (no {', '.join(map(repr, missing))})")
    if state["format"] != FORMAT:
        raise BadInputError(f"{path}: checkpoint format {state['format']!r}, this qsight reads {FORMAT}")
    _check_types(path, state)
    try:
        run_state = RunState.from_dict(state["run_state"])
    except TypeError as exc:
        raise BadInputError(f"{path}: checkpoint has a bad 'run_state': {exc}") from None
    return Checkpoint(path, state, run_state)


def _check_types(path: Path, state: Mapping[str, Any]) -> None:
    model = state["model"]
    if not isinstance(model, Mapping) or not all(isinstance(v, Tensor) for v in model.values()):
        raise BadInputError(f"{path}: checkpoint's 'model' is not a mapping of names to tensors")
    if not isinstance(state["stage"], str) or type(state["epoch"]) is not int:
        raise BadInputError(f"{path}: checkpoint's 'stage' or 'epoch' has the wrong type")
    for key in ("optimizer", "scheduler", "rng", "early_stopping", "run_state"):
        if not isinstance(state[key], Mapping):
            raise BadInputError(f"{path}: checkpoint's {key!r} is not a dict")


class CheckpointStore:
    """``checkpoints/last.pt``, ``best.pt`` and ``stage-<name>.pt`` of one run: writes and reads them."""

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

    def save(self, parts: TrainingParts, run_state: RunState, stage: str, *, best: bool = False,
             stage_end: bool = False) -> None:
        """Always ``last.pt``; also ``best.pt`` and the stage's file when asked."""
        state = checkpoint_state(parts, run_state, stage)
        targets = [self.last, *([self.best] if best else []), *([self.stage(stage)] if stage_end else [])]
        for path in targets:
            with atomic_writer(path, "wb") as fh:
                torch.save(state, fh)

    def read(self, path: Path | None = None) -> Checkpoint:
        """A checkpoint of this run (``last.pt`` by default), key and type checked."""
        return read_checkpoint(self.last if path is None else path)

    def restore_best(self, model: nn.Module) -> Checkpoint:
        """Load ``best.pt``'s weights into `model`; returns that checkpoint."""
        best = self.read(self.best)
        best.restore_model(model)
        return best


def state_mismatch(expected: Mapping[str, Tensor], found: Mapping[str, Any], limit: int = 4) -> list[str]:
    """What keeps `found` from loading where `expected` is: missing and unexpected keys, other shapes."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in found and isinstance(found[k], Tensor) and found[k].shape != v.shape]
    out = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape (checkpoint vs model)", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            out.append(f"{label}: {', '.join(items[:limit])}{more}")
    return out
