"""Which MLflow store a sink talks to, and a client whose sqlite store is created once across processes.

MLflow creates and migrates a sqlite store's tables on first use, without a lock: runs that start
together on a fresh store race inside that migration and can leave it unusable for good. Here the
first use of a sqlite store happens under an inter-process file lock beside the database
(``<store>.db.lock``), so one process creates the tables and the others find them ready.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_TIMEOUT = 300.0  # seconds a run waits for another process to finish creating the store


def tracking_uri(param: str | None, reports_root: Path) -> str:
    """The sink's `tracking_uri`, else MLFLOW_TRACKING_URI, else the sqlite store under the reports root."""
    if param:
        return param
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{reports_root.resolve() / 'mlflow.db'}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite URI; None for other stores and in-memory databases."""
    if not uri.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(uri).database
    except ArgumentError:
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


@contextmanager
def store_lock(uri: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``<database>.lock`` for a sqlite URI (its folder created when missing); nothing otherwise."""
    path = sqlite_file(uri)
    if path is None:
        yield
        return
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=timeout):
        yield


def open_client(uri: str) -> Any:
    """An `MlflowClient` for `uri`; its store is created or migrated by one process at a time.

    The client opens its store when built, and MLflow keeps the store per URI for the
    process, so the lock is only needed around construction.
    """
    from mlflow import MlflowClient

    with store_lock(uri):
        return MlflowClient(tracking_uri=uri)
