"""Sweep workers: take trials from the study until none is left; N of them as processes on this machine."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qsight.config.sweep import Sweep, load_sweep
from qsight.errors import BadInputError
from qsight.sweeps.study import claim_waiting, effective_count, open_storage, open_study, revive_stale
from qsight.sweeps.tracking import parents

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("qsight.sweeps")
#: What a worker imports to run trials, imported once by the process workers are forked from.
WORKER_PRELOAD = ("qsight.sweeps.worker", "qsight.experiment.build", "qsight.quantum.head")


def next_trial(sweep: Sweep, study: optuna.Study) -> optuna.Trial | None:
    """A queued trial (grid, or a re-run), else for searches a new sampled one while under ``trials``."""
    import optuna

    trial_id = claim_waiting(study)
    if trial_id is not None:
        return optuna.Trial(study, trial_id)
    if sweep.spec.sampler != "grid" and effective_count(study.get_trials(deepcopy=False)) < (sweep.spec.trials or 0):
        return study.ask()
    return None


def _running(study: optuna.Study) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))


def work(sweep: Sweep, study: optuna.Study, stop: threading.Event | None = None) -> int:
    """Run trials until the study has none left to run or wait for; the number this worker ran.

    While others' trials still run, wait: if their worker dies, its trial is queued again and run here.
    """
    from qsight.sweeps.trial import run_trial

    ran = 0
    while stop is None or not stop.is_set():
        revive_stale(sweep, study)
        trial = next_trial(sweep, study)
        if trial is None:
            if not _running(study):
                return ran
            time.sleep(min(2.0, sweep.spec.heartbeat))
            continue
        outcome = run_trial(sweep, study, trial, parents(study))
        ran += 1
        log.info("sweep %s: trial %d %s %s", sweep.name, trial.number, outcome.state, outcome.message)
    return ran


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of `workers` processes: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _watch_parent() -> None:
    """End this worker when the process that started it is gone (a killed sweep leaves no orphans)."""
    import multiprocessing
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os._exit(3)


def worker_main(sweep_path: str, overrides: Sequence[str], url: str, threads: int) -> None:
    """Entry point of a worker process: torch threads set, the sweep reloaded, trials run."""
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, daemon=True).start()
    from qsight.logs import NORMAL, configure

    configure(NORMAL)
    try:
        sweep = load_sweep(sweep_path, overrides, check=False)
        work(sweep, open_study(sweep, open_storage(url)))
    except BadInputError as exc:  # told to the parent by the exit code; no traceback
        log.error("sweep worker %d: %s", os.getpid(), exc)
        sys.exit(2)


def _worker_context() -> Any:
    """Fresh worker processes that import torch and qsight's training once between them: forked from a
    server process that imported them (``forkserver``), where the platform has one; else spawned."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(WORKER_PRELOAD))
    return ctx


def run_workers(sweep: Sweep, url: str, workers: int, study: optuna.Study,
                on_exit: Callable[[int, int], None] | None = None) -> list[int]:
    """Run `workers` workers: in this process for one, else as processes; their exit codes."""
    if workers <= 1:
        work(sweep, study)
        return [0]

    ctx = _worker_context()
    threads = threads_per_worker(workers)
    procs = [
        ctx.Process(target=worker_main, name=f"qsight-sweep-{i}",
                    args=(str(Path(sweep.path).resolve()), list(sweep.given), url, threads))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    codes = []
    for i, p in enumerate(procs):
        p.join()
        codes.append(p.exitcode or 0)
        if on_exit is not None:
            on_exit(i, p.exitcode or 0)
    return codes
