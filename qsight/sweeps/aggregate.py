"""A sweep's summary: its trials, seeds of one configuration aggregated (mean, std, 95 % interval)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qsight.config.sweep import SEED_PARAM, Sweep
from qsight.runs.folder import RunFolder
from qsight.sweeps.study import MESSAGE, RETRY_OF, effective_count

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

PREFIXES = ("val/", "test/")
COUNTED = {"COMPLETE": "done", "RUNNING": "running", "WAITING": "waiting", "PRUNED": "pruned", "FAIL": "failed"}


def interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and the t-interval of the mean (None below two values)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "std": 0.0, "ci": None, "n": n}
    from scipy.stats import t  # type: ignore[import-untyped]

    std = statistics.stdev(values)
    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci": [mean - half, mean + half], "n": n}


def _state(trial: FrozenTrial, retried: set[int]) -> str:
    name = str(trial.state.name)
    return "RETRIED" if name == "FAIL" and trial.number in retried else name


def trial_rows(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """One row per trial: number, state, params (seed apart), seed, run folder, value, message."""
    retried = {int(t.user_attrs[RETRY_OF]) for t in trials if RETRY_OF in t.user_attrs}
    rows = []
    for t in trials:
        params = dict(t.params or t.system_attrs.get("fixed_params", {}))
        runs = list(t.user_attrs.get("runs", []))
        seed = params.pop(SEED_PARAM, runs[0]["seed"] if runs else None)
        row: dict[str, Any] = {"number": t.number, "state": _state(t, retried), "params": params, "seed": seed,
                               "run_dir": runs[0]["run_dir"] if runs else None, "value": t.value}
        if len(runs) > 1:
            row["runs"] = runs
        for key in (MESSAGE, RETRY_OF):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        rows.append(row)
    return rows


def counts(trials: Sequence[FrozenTrial], total: int) -> dict[str, int]:
    """done / running / waiting / pruned / failed (re-run trials apart) and the total planned."""
    found = dict.fromkeys(COUNTED.values(), 0)
    for row in trial_rows(trials):
        if row["state"] in COUNTED:
            found[COUNTED[row["state"]]] += 1
    return {**found, "total": total}


def groups(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed runs of one configuration together: every final val/ and test/ metric aggregated (and per seed),
    and the test split's paired QWK differences of every two heads (``test_paired``: over seeds)."""
    by_params: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["state"] != "COMPLETE":
            continue
        group = by_params.setdefault(json.dumps(row["params"], sort_keys=True),
                                     {"params": row["params"], "seeds": [], "values": {}, "paired": {}})
        for run in row.get("runs") or [{"seed": row["seed"], "run_dir": row["run_dir"]}]:
            group["seeds"].append(run["seed"])
            folder = RunFolder(Path(run["run_dir"]))
            for key, value in {**folder.final, **folder.test}.items():
                if key.startswith(PREFIXES):
                    group["values"].setdefault(key, []).append({"seed": run["seed"], "value": float(value)})
            for pair, d in folder.test_paired.items():
                if isinstance(d.get("qwk_diff"), int | float):
                    group["paired"].setdefault(pair, []).append({"seed": run["seed"], "value": float(d["qwk_diff"])})
    return [
        {"params": g["params"], "n": len(g["seeds"]), "seeds": g["seeds"],
         "metrics": {k: _stat(v) for k, v in sorted(g["values"].items())},
         "test_paired": {k: _stat(v) for k, v in g["paired"].items()}}
        for g in by_params.values()
    ]


def _stat(values: list[dict[str, Any]]) -> dict[str, Any]:
    """The interval of a metric over a group's runs, with each run's value and seed."""
    return {**interval([v["value"] for v in values]), "values": values}


def importances(study: optuna.Study, sweep: Sweep) -> dict[str, float]:
    """Optuna's parameter importances (searches with two or more completed trials), else empty."""
    from optuna.trial import TrialState

    if sweep.spec.sampler == "grid" or len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return {}
    import optuna

    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def planned(sweep: Sweep) -> int:
    """How many trials the sweep runs in all."""
    if sweep.spec.sampler == "grid":
        return len(list(sweep.grid_points())) * len(sweep.seeds())
    return int(sweep.spec.trials or 0)


def build_summary(sweep: Sweep, study: optuna.Study, storage: str) -> dict[str, Any]:
    """The content of ``<output root>/sweeps/<name>/summary.json``."""
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials)
    done = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    pick = max if sweep.spec.direction == "maximize" else min
    best = pick(done, key=lambda r: r["value"]) if done else None
    return {
        "name": sweep.name,
        "sweep_file": str(sweep.path.resolve()),
        "storage": storage,
        "objective": sweep.spec.objective,
        "direction": sweep.spec.direction,
        "sampler": sweep.spec.sampler,
        "counts": counts(trials, max(planned(sweep), effective_count(trials))),
        "best": best,
        "trials": rows,
        "groups": groups(rows),
        "importances": importances(study, sweep),
    }


def write_summary(sweep: Sweep, summary: dict[str, Any]) -> Path:
    """Write summary.json atomically into the sweep's folder; its path."""
    from qsight.runs.layout import write_atomic
    from qsight.sinks.local import json_safe

    sweep.folder.mkdir(parents=True, exist_ok=True)
    path = sweep.folder / "summary.json"
    write_atomic(path, json.dumps(json_safe(summary), indent=2) + "\n")
    return path
