"""Living with many runs: find, read, compare, prune and archive run folders; report pages."""

from __future__ import annotations

from qsight.runs.folder import RunFolder, StageEpochs, find_runs, is_run_folder, open_run

__all__ = ["RunFolder", "StageEpochs", "find_runs", "is_run_folder", "open_run"]
