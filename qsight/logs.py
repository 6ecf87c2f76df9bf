"""Logging: WARNING and above on stderr (INFO with ``-v``, errors only with ``-q``), INFO and above in
``<run folder>/run.log`` always. Under torchrun only rank 0 writes to stderr (other ranks: errors only).

Third-party libraries log through the same handlers: their INFO lines (MLflow's store migration, say)
reach run.log but not the terminal unless verbose.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qsight.runs.layout import RunLayout

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_CONSOLE = "qsight-console"

QUIET, NORMAL, VERBOSE = -1, 0, 1


def console_level(verbosity: int, rank: int = 0) -> int:
    """The stderr level for a verbosity (-1 quiet, 0 normal, 1 verbose) and a process rank."""
    if rank != 0 or verbosity <= QUIET:
        return logging.ERROR
    return logging.INFO if verbosity >= VERBOSE else logging.WARNING


def configure(verbosity: int = NORMAL) -> None:
    """Route every logger to one stderr handler at the verbosity's level (idempotent)."""
    # MLflow and WandB write to the terminal on their own unless told not to; route them through logging.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    if verbosity < VERBOSE:
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # its bar when a model is logged
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in [h for h in root.handlers if h.get_name() == _CONSOLE]:
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.set_name(_CONSOLE)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(console_level(verbosity, int(os.environ.get("RANK", "0"))))
    root.addHandler(handler)
    for noisy in ("mlflow", "alembic", "urllib3", "git"):
        logging.getLogger(noisy).propagate = True
    for chatty in ("alembic", "qiskit"):  # one line per migration step, per transpiler pass otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)


class _RunLogHandler(logging.FileHandler):
    """run.log: a write that fails (a full disk) drops the line quietly instead of printing a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        return


@contextmanager
def run_log(run_dir: Path) -> Iterator[Path]:
    """Append INFO and above to ``<run_dir>/run.log`` for the duration of the block."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = RunLayout(run_dir).run_log
    handler = _RunLogHandler(path, encoding="utf-8", delay=False)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
