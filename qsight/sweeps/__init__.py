"""Sweeps on Optuna: grids and searches over ``--set`` paths, repeated over seeds, one run per trial.

Importing this package is cheap; Optuna and torch load when a sweep runs.
"""

from __future__ import annotations

from qsight.sweeps.aggregate import build_summary, interval, write_summary
from qsight.sweeps.study import open_storage, open_study, storage_url
from qsight.sweeps.worker import run_workers, work

__all__ = ["build_summary", "interval", "open_storage", "open_study", "run_workers", "storage_url", "work",
           "write_summary"]
