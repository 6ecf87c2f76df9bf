"""From a spec to a finished run: `run_experiment` launches (new or resumed), `Experiment` is what it builds.

Importing this package is cheap; the torch-heavy builder loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsight.experiment.launch import new_run_id, resolve_run, run_experiment
from qsight.experiment.result import RunResult
from qsight.lazy import lazy_getattr

if TYPE_CHECKING:
    from qsight.experiment.build import Experiment

__getattr__ = lazy_getattr(__name__, {"Experiment": "qsight.experiment.build"})

__all__ = ["Experiment", "RunResult", "new_run_id", "resolve_run", "run_experiment"]
