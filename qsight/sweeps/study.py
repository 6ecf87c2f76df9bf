"""The Optuna study behind a sweep: its storage, the queue of grid trials, claiming and reviving trials."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qsight.config.sweep import SEED_PARAM, Sweep
from qsight.errors import BadInputError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

log = logging.getLogger("qsight.sweeps")
READY, DEFINITION, RETRY_OF, WORKER, BEAT, MESSAGE = "ready", "definition", "retry_of", "worker", "heartbeat", "message"
JOIN_WAIT = 30.0


def storage_url(sweep: Sweep, given: str | None = None) -> str:
    """The storage asked for, else the sweep's, else a journal file in the sweep's folder."""
    return given or sweep.spec.storage or str(sweep.folder / "journal.log")


def open_storage(url: str) -> BaseStorage:
    """An RDB storage for ``dialect://`` URLs (sqlite, postgresql, mysql), else a journal file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if "://" in url:
            kwargs: dict[str, Any] = {}
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                kwargs = {"connect_args": {"timeout": 120}}
            return _rdb(_driver(url), kwargs)
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except ImportError as exc:
        raise BadInputError(f"storage {url}: a driver is missing ({exc}); for PostgreSQL install "
                            "qsight[sweeps-postgres]") from None
    except Exception as exc:  # a bad URL, an unreachable server, a read-only folder
        raise BadInputError(f"storage {url}: cannot open it ({type(exc).__name__}: {exc})") from None


def _driver(url: str) -> str:
    """``postgresql://`` through psycopg2 when psycopg (3, SQLAlchemy's default) is not installed."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _rdb(url: str, kwargs: dict[str, Any], attempts: int = 3) -> BaseStorage:
    """An RDB storage; retried, as workers starting together may race to create its tables."""
    import optuna

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def definition(sweep: Sweep) -> str:
    """What makes two sweep commands the same study: the sweep file's values and the ``--set`` items."""
    data = sweep.spec.model_dump(mode="json", exclude={"storage", "heartbeat", "description"})
    return json.dumps({"sweep": data, "set": list(sweep.overrides)}, sort_keys=True)


def _sampler(sweep: Sweep) -> optuna.samplers.BaseSampler:
    import optuna

    if sweep.spec.sampler == "tpe":
        return optuna.samplers.TPESampler(constant_liar=True)
    return optuna.samplers.RandomSampler()  # grid trials all come from the queue


def _pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    import optuna

    if sweep.spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, storage: BaseStorage) -> optuna.Study:
    """Create the study (and queue its grid), or join it once its creator has queued the grid."""
    import optuna

    kwargs: dict[str, Any] = dict(study_name=sweep.name, storage=storage, sampler=_sampler(sweep),
                                  pruner=_pruner(sweep), direction=sweep.spec.direction)
    try:
        study = optuna.create_study(**kwargs)
        study.set_user_attr(DEFINITION, definition(sweep))
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=sweep.name, storage=storage, sampler=kwargs["sampler"],
                                  pruner=kwargs["pruner"])
        _wait_ready(study)
        _same_sweep(sweep, study)
    if not study.user_attrs.get(READY):
        fill_queue(sweep, study)
        study.set_user_attr(READY, True)
    return study


def _wait_ready(study: optuna.Study) -> None:
    deadline = time.monotonic() + JOIN_WAIT
    while not study.user_attrs.get(READY) and time.monotonic() < deadline:
        time.sleep(0.5)


def _same_sweep(sweep: Sweep, study: optuna.Study) -> None:
    stored = study.user_attrs.get(DEFINITION)
    if stored is not None and stored != definition(sweep):
        raise BadInputError(
            f"{sweep.path}: the study {sweep.name!r} in this storage was started from a different sweep "
            "(values or --set differ); rename the sweep or give another storage"
        )


def grid_trials(sweep: Sweep) -> list[dict[str, Any]]:
    """Every trial of a grid sweep: each grid point with each seed."""
    return [{**p, SEED_PARAM: s} for p in sweep.grid_points() for s in sweep.seeds()]


def fill_queue(sweep: Sweep, study: optuna.Study) -> None:
    """Queue every grid trial not in the study yet (none for searches)."""
    if sweep.spec.sampler != "grid":
        return
    have = {_key(t.params or t.system_attrs.get("fixed_params", {})) for t in study.get_trials(deepcopy=False)}
    for params in grid_trials(sweep):
        if _key(params) not in have:
            study.enqueue_trial(params)


def _key(params: Any) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def claim_waiting(study: optuna.Study) -> int | None:
    """Take one queued trial (atomically: another worker cannot take it too); its id, or None."""
    from optuna.trial import TrialState

    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                return int(trial._trial_id)
        except Exception:  # finished or taken meanwhile
            continue
    return None


def effective_count(trials: Sequence[FrozenTrial]) -> int:
    """Trials that count towards ``trials = N``: every one but those re-queued after their worker died."""
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    return sum(1 for t in trials if t.number not in retried)


def mark_worker(study: optuna.Study, trial_id: int) -> None:
    """Record who runs the trial, and its first heartbeat."""
    storage = study._storage
    storage.set_trial_user_attr(trial_id, WORKER, {"host": socket.gethostname(), "pid": os.getpid()})
    beat(study, trial_id)


def beat(study: optuna.Study, trial_id: int) -> None:
    study._storage.set_trial_user_attr(trial_id, BEAT, time.time())


def revive_stale(sweep: Sweep, study: optuna.Study) -> list[int]:
    """Fail running trials whose worker died (a dead pid here, or no heartbeat) and queue them again."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    revived = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = _dead(trial, sweep.spec.heartbeat)
        if why is None:
            continue
        try:  # the message first: a finished trial takes no attributes
            study._storage.set_trial_user_attr(trial._trial_id, MESSAGE, f"{why}; the trial runs again")
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except (UpdateFinishedTrialError, KeyError):
            continue  # another worker got there first
        params = trial.params or trial.system_attrs.get("fixed_params", {})
        study.enqueue_trial(dict(params), user_attrs={RETRY_OF: trial.number})
        log.warning("sweep %s: trial %d: %s; queued again", sweep.name, trial.number, why)
        revived.append(trial.number)
    return revived


def _dead(trial: FrozenTrial, heartbeat: int) -> str | None:
    worker = trial.user_attrs.get(WORKER) or {}
    if worker.get("host") == socket.gethostname() and not _alive(int(worker.get("pid", 0))):
        return f"its worker (pid {worker.get('pid')}) is gone"
    last = trial.user_attrs.get(BEAT)
    if last is None and trial.datetime_start is not None:
        last = trial.datetime_start.timestamp()
    if last is not None and time.time() - float(last) > 2 * heartbeat + 10:
        return f"no heartbeat from its worker for {time.time() - float(last):.0f} s"
    return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
