"""Tables of runs: one row per run (``runs list``) and runs side by side (``runs compare``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qsight.metric_names import by_head, order_heads, parse_metric
from qsight.runs.folder import RunFolder

KEY_METRICS = ("qwk", "accuracy", "balanced_accuracy", "macro_f1", "referable_auc", "ece")


def format_seconds(seconds: float | None) -> str:
    """``42 s``, ``2 min 25 s``, ``1 h 03 min``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass(frozen=True)
class RunRow:
    """What ``runs list`` shows of one run."""

    experiment: str
    run_id: str
    path: str
    status: str
    started: str | None
    seconds: float | None
    heads: dict[str, dict[str, float]]
    dry_run: bool = False
    test: dict[str, dict[str, Estimate]] = field(default_factory=dict)  # test split, key metrics

    def as_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "run_id": self.run_id, "path": self.path, "status": self.status,
            "started": self.started, "seconds": self.seconds, "dry_run": self.dry_run, "final": self.heads,
            "test": {h: {m: e.as_json() for m, e in ms.items()} for h, ms in self.test.items()},
        }


@dataclass(frozen=True)
class Estimate:
    """A test metric and its bootstrap interval (None when there is none)."""

    value: float
    interval: tuple[float, float] | None = None

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "ci": None if self.interval is None else list(self.interval)}

    def text(self, digits: int = 3) -> str:
        """``0.912 [0.890, 0.931]``."""
        if self.interval is None:
            return f"{self.value:.{digits}f}"
        low, high = self.interval
        return f"{self.value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def test_estimates(run: RunFolder, metrics: Sequence[str] | None = KEY_METRICS) -> dict[str, dict[str, Estimate]]:
    """Per head, per metric (``metrics`` only, unless None): the test value and its interval."""
    ci = run.test_ci
    out: dict[str, dict[str, Estimate]] = {}
    for key, value in run.test.items():
        name = parse_metric(key)
        if name is None or name.split != "test" or (metrics is not None and name.metric not in metrics):
            continue
        out.setdefault(name.head, {})[name.metric] = Estimate(float(value), ci.get(key))
    return {h: dict(sorted(out[h].items(), key=lambda kv: _metric_rank(kv[0]))) for h in order_heads(out)}


def run_row(run: RunFolder) -> RunRow:
    """The list row of `run` (final validation metrics per head, key metrics only)."""
    heads = {h: {k: v for k, v in m.items() if k in KEY_METRICS} for h, m in by_head(run.final).items()}
    started = run.started
    return RunRow(run.experiment, run.run_id, str(run.path), run.status,
                  started.isoformat(timespec="seconds") if started else None, run.seconds, heads,
                  dry_run=bool((run.summary or {}).get("dry_run")), test=test_estimates(run))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested tables and lists as dotted keys (``stages.1.lr``), the notation of ``--set``."""
    if isinstance(value, Mapping):
        items: Sequence[tuple[str, Any]] = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and any(isinstance(v, Mapping | list) for v in value):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    return out


_MISSING = object()


def spec_differences(runs: Sequence[RunFolder]) -> dict[str, list[Any]]:
    """Dotted spec keys whose values differ between the runs' resolved specs (None where absent)."""
    flat = [flatten(r.spec) for r in runs]
    keys = sorted({k for f in flat for k in f}, key=_natural)
    diff: dict[str, list[Any]] = {}
    for key in keys:
        values = [f.get(key, _MISSING) for f in flat]
        if any(v != values[0] for v in values[1:]):
            diff[key] = [None if v is _MISSING else v for v in values]
    return diff


def _natural(key: str) -> list[tuple[int, Any]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in key.split(".")]


def metric_table(runs: Sequence[RunFolder]) -> dict[str, dict[str, list[float | None]]]:
    """Per head, per metric: the final validation value of each run (None where absent)."""
    per_run = [by_head(r.final) for r in runs]
    heads = order_heads(h for pr in per_run for h in pr)
    table: dict[str, dict[str, list[float | None]]] = {}
    for head in heads:
        names = sorted({m for pr in per_run for m in pr.get(head, {})}, key=_metric_rank)
        table[head] = {m: [pr.get(head, {}).get(m) for pr in per_run] for m in names}
    return table


def _metric_rank(name: str) -> tuple[int, str]:
    return (KEY_METRICS.index(name) if name in KEY_METRICS else len(KEY_METRICS), name)


def test_table(runs: Sequence[RunFolder]) -> dict[str, dict[str, list[Estimate | None]]]:
    """Per head, per metric: each run's test value and interval (None where absent)."""
    per_run = [test_estimates(r, None) for r in runs]
    heads = order_heads(h for pr in per_run for h in pr)
    table: dict[str, dict[str, list[Estimate | None]]] = {}
    for head in heads:
        names = sorted({m for pr in per_run for m in pr.get(head, {})}, key=_metric_rank)
        table[head] = {m: [pr.get(head, {}).get(m) for pr in per_run] for m in names}
    return table


def comparison(runs: Sequence[RunFolder]) -> dict[str, Any]:
    """``runs compare`` as data: the runs, metrics per head side by side (validation and test), spec
    differences."""
    test = {h: {m: [None if e is None else e.as_json() for e in es] for m, es in ms.items()}
            for h, ms in test_table(runs).items()}
    return {
        "runs": [{k: v for k, v in run_row(r).as_json().items() if k not in ("final", "test")} for r in runs],
        "metrics": metric_table(runs),
        "test": test,
        "spec_differences": spec_differences(runs),
    }
