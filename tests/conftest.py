"""Runs shared by the whole session, made once through the real CLI.

- `smoke_run`: experiments/smoke.toml run to the end, every sink on (W&B offline, MLflow's sqlite store).
- `long_run`: the same spec with ``LONG_OVERRIDES``, run to the end; on its way, copies of its folder are
  taken as a kill right after each of ``KILL_POINTS`` would leave it (`killed_runs`; `interrupted_run` is the
  one killed mid-stage).

Tests only read these folders; a test that changes one copies it first (`helpers.copy_run`).

They are made in the background as soon as the tests are collected (`pytest_collection_finish`), while the
tests that do not need them run. Under pytest-xdist (``-n 2``) the workers share them: the first process to
get to one makes it under a file lock in the session's common temporary folder, the others wait and read it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from tests.helpers import KILL_POINTS, SMOKE, cli, run_with_snapshots

LONG_OVERRIDES = ("--set", "stages.1.epochs=3", "--set", "train.batch_size=8")
#: Fixtures that read the session's shared runs.
SHARED_FIXTURES = {"smoke_run", "long_run", "killed_runs", "interrupted_run"}
#: Fixtures that train (whole runs, or processes of their own): a test using one is in the slow selection.
TRAINING_FIXTURES = SHARED_FIXTURES | {"tiny_run", "two_processes"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that uses a training fixture: ``-m "not slow"`` then starts no run.

    Order for two workers taking whole files: files with a test that reads the shared runs go last, so
    that those runs are made (in the background, `pytest_collection_finish`) while the others run; before
    them, files with more slow tests first, so that no long file starts when the other worker is done."""
    waiting: set[Path] = set()
    slow: dict[Path, int] = {}
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if TRAINING_FIXTURES & used:
            item.add_marker(pytest.mark.slow)
        if SHARED_FIXTURES & used:
            waiting.add(item.path)
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: (item.path in waiting, -slow[item.path]))  # stable within a file


def _session_dir(factory: pytest.TempPathFactory, worker: str) -> Path:
    """The folder every xdist worker of the session sees: the session's own temporary folder."""
    base = factory.getbasetemp()
    return base if worker == "master" else base.parent


def _made_once(run_dir: Path, make: Callable[[], None]) -> None:
    """`make` (which makes `run_dir`) run by the first process to get here, under a lock beside
    `run_dir`; later ones wait for it and find it made."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run_dir.with_name(f".{run_dir.name}.lock"))):
        done = run_dir.with_name(f".{run_dir.name}.done")
        if not done.exists():
            make()
            done.touch()


def _worker(config: pytest.Config) -> str:
    return str(getattr(config, "workerinput", {}).get("workerid", "master"))


@pytest.fixture(scope="session")
def worker_id_or_master(request: pytest.FixtureRequest) -> str:
    return _worker(request.config)


def pytest_collection_finish(session: pytest.Session) -> None:
    """When the selected tests need the shared runs, start making them in the background at once, so that
    the tests before the first one needing them run meanwhile (on the other core)."""
    if any(SHARED_FIXTURES & set(getattr(item, "fixturenames", ())) for item in session.items):
        session_dir = _session_dir(session.config._tmp_path_factory, _worker(session.config))
        thread = threading.Thread(target=_make_shared, args=(session_dir,), name="shared-runs", daemon=True)
        thread.start()
        session.config.add_cleanup(thread.join)


def _make_shared(session_dir: Path) -> None:
    """The smoke run, then the long one (each made by whichever process gets to it first)."""
    args = _smoke_args(session_dir / "reports")
    _make_smoke(session_dir / "reports", args)
    _make_long(session_dir / "reports", args, session_dir / "killed")


def _smoke_args(reports: Path) -> tuple[str, ...]:
    return str(SMOKE), "--set", f'output.root="{reports}"'


def _make_smoke(reports: Path, args: tuple[str, ...]) -> Path:
    run_dir = reports / "runs" / "smoke" / "completed"

    def make() -> None:
        result = cli("run", *args, "--run-dir", str(run_dir))
        assert result.returncode == 0, result.stderr[-3000:]

    _made_once(run_dir, make)
    return run_dir


@dataclass(frozen=True)
class LongRun:
    run_dir: Path  # completed
    killed: dict[str, Path]  # kill point -> the folder as a kill right after writing that checkpoint leaves it


def _make_long(reports: Path, args: tuple[str, ...], killed_root: Path) -> LongRun:
    points = {p: killed_root / "runs" / "smoke" / f"killed-{p.removesuffix('.pt')}" for p in KILL_POINTS}
    run_dir = reports / "runs" / "smoke" / "long"

    def make() -> None:
        run_with_snapshots([*args, *LONG_OVERRIDES], run_dir, points)
        following = [*KILL_POINTS[1:], "stage-ensemble.pt"]
        for point, later in zip(KILL_POINTS, following, strict=True):
            assert not (points[point] / "checkpoints" / later).exists(), f"the copy at {point} came too late"

    _made_once(run_dir, make)  # the copies are made on the way
    return LongRun(run_dir, points)


@pytest.fixture(scope="session")
def reports_root(tmp_path_factory: pytest.TempPathFactory, worker_id_or_master: str) -> Path:
    """The output root of the session's runs: one synthetic-data cache, one MLflow store."""
    return _session_dir(tmp_path_factory, worker_id_or_master) / "reports"


@pytest.fixture(scope="session")
def smoke_args(reports_root: Path) -> tuple[str, ...]:
    """``qsight run`` arguments for experiments/smoke.toml with its output under `reports_root`."""
    return _smoke_args(reports_root)


@pytest.fixture(scope="session")
def smoke_run(reports_root: Path, smoke_args: tuple[str, ...]) -> Path:
    """The completed smoke run (read only)."""
    return _make_smoke(reports_root, smoke_args)


@pytest.fixture(scope="session")
def _long(smoke_run: Path, smoke_args: tuple[str, ...], reports_root: Path,
          tmp_path_factory: pytest.TempPathFactory, worker_id_or_master: str) -> LongRun:
    """Started after `smoke_run` (tests rely on the order). The copies lie under a reports root of their own."""
    return _make_long(reports_root, smoke_args, _session_dir(tmp_path_factory, worker_id_or_master) / "killed")


@pytest.fixture(scope="session")
def long_run(_long: LongRun) -> Path:
    """The completed long run (read only)."""
    return _long.run_dir


@pytest.fixture(scope="session")
def killed_runs(_long: LongRun) -> dict[str, Path]:
    """Kill point (a checkpoint file name) -> the long run's folder as that kill left it (read only)."""
    return _long.killed


@pytest.fixture(scope="session")
def interrupted_run(killed_runs: dict[str, Path]) -> Path:
    """The long run killed mid-way through its first stage (read only)."""
    return killed_runs["last.pt"]
