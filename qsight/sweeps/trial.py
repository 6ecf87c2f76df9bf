"""One trial of a sweep: its parameters from Optuna, then an ordinary run per seed, then its value."""

from __future__ import annotations

import logging
import statistics
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qsight.config.sweep import SEED_PARAM, Sweep
from qsight.errors import BadInputError, RunStoppedError
from qsight.sweeps.study import MESSAGE, beat, mark_worker

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("qsight.sweeps")
RUNS = "runs"


def suggest(sweep: Sweep, trial: optuna.Trial) -> dict[str, Any]:
    """The trial's parameters (``--set`` paths to values), without the seed."""
    params: dict[str, Any] = {}
    for key, values in sweep.spec.grid.items():
        params[key] = trial.suggest_categorical(key, list(values))
    for key, rng in sweep.spec.search.items():
        if rng.choice is not None:
            params[key] = trial.suggest_categorical(key, list(rng.choice))
        elif rng.int_ is not None:
            step = int(rng.step or 1)
            params[key] = trial.suggest_int(key, rng.int_[0], rng.int_[1], step=step, log=rng.log)
        elif rng.float_ is not None:
            params[key] = trial.suggest_float(key, rng.float_[0], rng.float_[1], step=rng.step, log=rng.log)
    return params


def trial_seeds(sweep: Sweep, trial: optuna.Trial) -> list[int]:
    """A grid trial is one seed; a searched configuration runs every seed."""
    if sweep.spec.sampler == "grid":
        return [int(trial.suggest_categorical(SEED_PARAM, sweep.seeds()))]
    return sweep.seeds()


@dataclass
class PruneHook:
    """Reports the objective after every epoch; stops the run when Optuna's pruner says so."""

    trial: optuna.Trial
    objective: str
    step: int = 0
    pruned: bool = False

    def __call__(self, stage: str, epoch: int, metrics: Mapping[str, float]) -> None:
        value = metrics.get(self.objective)
        if value is None:
            return
        self.trial.report(float(value), self.step)
        self.step += 1
        if self.trial.should_prune():
            self.pruned = True
            raise RunStoppedError(f"pruned by the sweep after stage {stage} epoch {epoch} "
                                  f"({self.objective} = {value:.4g})")


@dataclass
class Outcome:
    """How a trial ended: an Optuna state name, its value, message and runs."""

    state: str = "COMPLETE"
    values: list[float] = field(default_factory=list)
    message: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)


class Heartbeat:
    """A thread recording the trial's heartbeat every `interval` seconds while it runs."""

    def __init__(self, study: optuna.Study, trial_id: int, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(study, trial_id, interval), daemon=True)

    def _loop(self, study: optuna.Study, trial_id: int, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                beat(study, trial_id)
            except Exception as exc:  # a storage hiccup: the next beat may pass
                log.warning("heartbeat of trial %d failed: %s", trial_id, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_trial(sweep: Sweep, study: optuna.Study, trial: optuna.Trial, parents: dict[str, str]) -> Outcome:
    """Run the trial's runs and tell Optuna how it ended; a failure is recorded, never raised."""
    mark_worker(study, trial._trial_id)
    outcome = Outcome()
    with Heartbeat(study, trial._trial_id, sweep.spec.heartbeat):
        try:
            params = suggest(sweep, trial)
            for i, seed in enumerate(trial_seeds(sweep, trial)):
                hook = PruneHook(trial, sweep.spec.objective) if sweep.spec.pruner != "none" and i == 0 else None
                _run_one(sweep, trial, params, seed, hook, parents, outcome)
                trial.set_user_attr(RUNS, outcome.runs)
                if outcome.state != "COMPLETE":
                    break
        except BadInputError as exc:
            outcome.state, outcome.message = "FAIL", str(exc)
    _tell(study, trial, outcome)
    return outcome


def _run_one(sweep: Sweep, trial: optuna.Trial, params: dict[str, Any], seed: int, hook: PruneHook | None,
             parents: dict[str, str], outcome: Outcome) -> None:
    from qsight.experiment.launch import run_experiment
    from qsight.sweeps.tracking import mlflow_overrides

    sweep.trial_spec(params, seed)  # validated before it starts
    overrides = [*sweep.trial_overrides(params, seed), *mlflow_overrides(sweep, trial.number, parents)]
    run_tags = {"sweep": sweep.name, "trial": str(trial.number), "seed": str(seed)}
    try:
        result = run_experiment(sweep.base_path, overrides, progress=False, tags=run_tags,
                                epoch_hooks=[hook] if hook else [])
    except BadInputError as exc:
        outcome.state, outcome.message = "FAIL", str(exc)
        return
    except Exception as exc:  # a crash outside the run's own handling: record it, go on
        outcome.state, outcome.message = "FAIL", f"{type(exc).__name__}: {exc}"
        return
    outcome.runs.append({"seed": seed, "run_dir": str(result.run_dir), "status": result.status})
    if result.status != "completed":
        outcome.state = "PRUNED" if hook is not None and hook.pruned else "FAIL"
        outcome.message = result.message
        return
    value = (result.summary.get("final") or {}).get(sweep.spec.objective)
    if not isinstance(value, int | float):
        outcome.state = "FAIL"
        outcome.message = f"objective {sweep.spec.objective} is not among the run's final metrics"
        return
    outcome.values.append(float(value))


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> None:
    from optuna.trial import TrialState

    if outcome.message:
        trial.set_user_attr(MESSAGE, outcome.message)
    if outcome.state == "COMPLETE":
        study.tell(trial, statistics.fmean(outcome.values))
    else:
        study.tell(trial, state=TrialState.PRUNED if outcome.state == "PRUNED" else TrialState.FAIL)
