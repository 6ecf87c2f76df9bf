"""How a run ended: the value `run_experiment` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    """How a run ended and where it lives."""

    run_dir: Path
    status: str
    message: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
