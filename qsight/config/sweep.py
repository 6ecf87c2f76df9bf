"""Sweep files: a base spec, parameters (``--set`` paths) to grid over or search, and seeds to repeat."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qsight.config.overrides import OverrideError, apply_overrides
from qsight.config.spec import ExperimentSpec, SpecError, _loc_path, _message, validate_spec
from qsight.config.toml_io import read_toml
from qsight.metric_names import DEFAULT_MONITOR, METRIC_PATTERN, NAME_PATTERN

_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
SEED_PARAM = "seed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchRange(_Strict):
    """One searched parameter: ``{float = [lo, hi], log = true}``, ``{int = [lo, hi]}`` or ``{choice = [...]}``."""

    float_: tuple[float, float] | None = Field(None, alias="float")
    int_: tuple[int, int] | None = Field(None, alias="int")
    choice: tuple[Any, ...] | None = Field(None, min_length=1)
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> SearchRange:
        given = [k for k, v in (("float", self.float_), ("int", self.int_), ("choice", self.choice)) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of float = [lo, hi], int = [lo, hi], choice = [...]")
        bounds = self.float_ or self.int_
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"the low end must be below the high end (got {list(bounds)})")
        if self.log and (bounds is None or bounds[0] <= 0):
            raise ValueError("log = true needs a numeric range above 0")
        return self

    def ends(self) -> list[Any]:
        """Values that every trial's spec lies between: both ends, or every choice."""
        if self.choice is not None:
            return list(self.choice)
        return list(self.float_ or self.int_ or ())


class SweepSpec(_Strict):
    """One sweep file, validated."""

    name: str = Field(pattern=NAME_PATTERN, description="the study's name; summary under <root>/sweeps/<name>")
    base: str = Field(min_length=1, description="experiment spec, relative to the sweep file")
    description: str = ""
    seeds: tuple[int, ...] | None = Field(None, min_length=1, description="every configuration once per seed")
    repeats: int | None = Field(None, ge=1, le=1000, description="seeds base.seed, base.seed + 1, ...")
    objective: str = Field(DEFAULT_MONITOR, pattern=METRIC_PATTERN)
    direction: Literal["maximize", "minimize"] = "maximize"
    sampler: Literal["grid", "tpe", "random"] = "grid"
    trials: int | None = Field(None, ge=1, le=100_000, description="configurations sampled (tpe, random)")
    pruner: Literal["none", "median"] = "none"
    storage: str | None = Field(None, description="Optuna storage URL; default: a journal file under the sweep")
    heartbeat: int = Field(30, ge=1, le=3600, description="seconds between a running trial's heartbeats")
    set_: tuple[str, ...] = Field((), alias="set", description="--set items applied to every trial's spec")
    grid: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    search: dict[str, SearchRange] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if self.seeds is not None and self.repeats is not None:
            raise ValueError("give seeds or repeats, not both")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds repeat a value")
        if self.sampler == "grid" and self.search:
            raise ValueError("a grid sweep takes [grid] only; [search] needs sampler = 'tpe' or 'random'")
        if self.sampler != "grid" and not (self.search or self.grid):
            raise ValueError(f"sampler {self.sampler!r} needs a [search] table")
        if self.sampler != "grid" and self.trials is None:
            raise ValueError(f"sampler {self.sampler!r} needs trials = N")
        return self


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: its spec, where the base lies, and the base's raw data (with ``--set`` applied)."""

    spec: SweepSpec
    path: Path
    base_path: Path
    base_raw: dict[str, Any]
    base: ExperimentSpec
    overrides: tuple[str, ...] = ()  # the file's ``set``, then the command line's
    given: tuple[str, ...] = ()  # the command line's alone: what a worker process is started with

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def output_root(self) -> Path:
        return Path(self.base.output.root)

    @property
    def folder(self) -> Path:
        """``<output root>/sweeps/<name>``: summary, default storage."""
        return self.output_root / "sweeps" / self.name

    def seeds(self) -> list[int]:
        if self.spec.seeds is not None:
            return list(self.spec.seeds)
        return [self.base.seed + i for i in range(self.spec.repeats or 1)]

    def grid_points(self) -> Iterator[dict[str, Any]]:
        """Every grid configuration (keys in file order), without the seed; no [grid]: the base alone."""
        keys = list(self.spec.grid)
        for values in itertools.product(*(self.spec.grid[k] for k in keys)):
            yield dict(zip(keys, values, strict=True))

    def trial_overrides(self, params: Mapping[str, Any], seed: int) -> list[str]:
        """The ``--set`` items of one trial: the sweep's own, then its parameters and seed."""
        return [*self.overrides, *(f"{k}={literal(v)}" for k, v in params.items()), f"seed={seed}"]

    def trial_spec(self, params: Mapping[str, Any], seed: int) -> ExperimentSpec:
        """One trial's validated spec; a bad one is a `SpecError` naming the sweep key."""
        raw = apply_overrides(self.base_raw, self.trial_overrides(params, seed)[len(self.overrides):])
        return validate_spec(raw, source=f"{self.path} (trial {_describe(params, seed)})")


def literal(value: Any) -> str:
    """`value` as a TOML literal for ``--set``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {literal(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"{value!r} has no TOML spelling")


def _describe(params: Mapping[str, Any], seed: int) -> str:
    return ", ".join([*(f"{k}={v!r}" for k, v in params.items()), f"seed={seed}"])


def is_sweep_data(raw: Mapping[str, Any]) -> bool:
    """A sweep file has a top-level ``base`` key (experiment specs never do)."""
    return "base" in raw


def load_sweep(path: str | Path, overrides: Sequence[str] = (), *, check: bool = True) -> Sweep:
    """Read and validate a sweep file, its base spec and (with `check`) every trial's spec or range end."""
    path = Path(path)
    raw = read_toml(path)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(str(path), [(_loc_path(e["loc"], raw), _message(e)) for e in exc.errors()]) from None
    _check_keys(spec, path)
    base_path = (path.parent / spec.base).resolve() if not Path(spec.base).is_absolute() else Path(spec.base)
    if not base_path.is_file():
        raise SpecError(str(path), [("base", f"{base_path}: spec file not found")])
    given = tuple(overrides)
    overrides = [*spec.set_, *given]
    base_raw = apply_overrides(read_toml(base_path), overrides)
    base = validate_spec(base_raw, source=str(base_path))
    sweep = Sweep(spec, path, base_path, base_raw, base, tuple(overrides), given)
    if check:
        check_trials(sweep)
    return sweep


def _check_keys(spec: SweepSpec, path: Path) -> None:
    issues = []
    for table, keys in (("grid", spec.grid), ("search", spec.search)):
        for key, values in keys.items():
            where = f"{table}.{key}"
            if not _KEY.match(key):
                issues.append((where, "not a --set key path (dotted names and list indices, e.g. stages.0.lr)"))
            elif key == SEED_PARAM:
                issues.append((where, "seeds are swept with seeds = [...] or repeats = N"))
            elif table == "grid" and not values:
                issues.append((where, "an empty list of values"))
    for key in set(spec.grid) & set(spec.search):
        issues.append((f"search.{key}", "also in [grid]"))
    if issues:
        raise SpecError(str(path), issues)


def check_trials(sweep: Sweep) -> None:
    """Every grid point (first seed) validates, and so does each end of every searched range."""
    seed = sweep.seeds()[0]
    issues: list[tuple[str, str]] = []
    probes: list[tuple[str, dict[str, Any]]] = []
    first = next(sweep.grid_points(), {}) if sweep.spec.grid else {}
    if sweep.spec.sampler == "grid":
        probes = [(", ".join(f"grid.{k}={v!r}" for k, v in p.items()), p) for p in sweep.grid_points()]
    else:
        for key, rng in sweep.spec.search.items():
            probes += [(f"search.{key}={end!r}", {**first, key: end}) for end in rng.ends()]
        for key, values in sweep.spec.grid.items():
            probes += [(f"grid.{key}={v!r}", {**first, key: v}) for v in values]
    for where, params in probes:
        try:
            sweep.trial_spec(params, seed)
        except OverrideError as exc:
            issues.append((where, str(exc)))
        except SpecError as exc:
            issues += [(where, f"{k or '<top level>'}: {m}") for k, m in exc.issues]
    if issues:
        raise SpecError(str(sweep.path), _unique(issues))


def _unique(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(items))


__all__ = ["SearchRange", "Sweep", "SweepSpec", "is_sweep_data", "literal", "load_sweep"]
