"""Where a run stands: stage, epoch, steps, history, early stopping. Plain data, checkpointed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from qsight.runs.layout import improves


@dataclass
class EarlyStopping:
    """Stop a stage after `patience` epochs without improvement of its monitor."""

    patience: int | None
    mode: Literal["max", "min"] = "max"
    best: float | None = None
    bad_epochs: int = 0
    stopped: bool = False

    def update(self, value: float | None) -> bool:
        """Record an epoch's monitor value; True when it is the best so far."""
        improved = improves(value, self.best, self.mode)
        if improved:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.patience is not None and self.bad_epochs >= self.patience:
                self.stopped = True
        return improved

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EarlyStopping:
        return cls(**data)


@dataclass
class RunState:
    """Progress of a run; enough to resume it and to write its summary."""

    stage_index: int = 0
    epoch: int = 0  # epochs completed in the current stage
    global_step: int = 0
    finished: bool = False
    best: dict[str, Any] = field(default_factory=dict)  # the epoch saved as best.pt
    last: dict[str, float] = field(default_factory=dict)  # metrics of the latest epoch
    stages: list[dict[str, Any]] = field(default_factory=list)

    def record_epoch(self, stage: str, epoch: int, metrics: Mapping[str, float], improved: bool) -> None:
        """Remember the latest metrics and, when improved, the best epoch of the stage (`epoch` from 0)."""
        self.last = dict(metrics)
        if improved:
            # counted from 1, as in metrics.jsonl and the epoch_<NN> folders
            self.best = {"stage": stage, "epoch": epoch + 1, "metrics": dict(metrics)}

    def stage_done(self, name: str, early_stopped: bool) -> None:
        """Close the current stage and move to the next."""
        self.stages.append({"name": name, "epochs": self.epoch, "early_stopped": early_stopped,
                            "final": dict(self.last)})
        self.stage_index += 1
        self.epoch = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        return cls(**data)
