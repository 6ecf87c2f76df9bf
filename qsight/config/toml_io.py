"""Spec files: TOML in (read, override, validate) and out (every value, reading back identical)."""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from qsight.config.overrides import apply_overrides
from qsight.config.spec import ExperimentSpec, SpecError, validate_spec
from qsight.errors import BadInputError

log = logging.getLogger("qsight")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; missing, unreadable or malformed files are `BadInputError`s."""
    if not path.is_file():
        raise BadInputError(f"{path}: spec file not found")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{path}: TOML syntax error: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read spec: {exc}") from None


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentSpec:
    """Read, override (``KEY.PATH=VALUE``) and validate one experiment file."""
    path = Path(path)
    raw = apply_overrides(read_toml(path), overrides)
    return validate_spec(raw, source=str(path))


def load_run_spec(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentSpec:
    """A run folder's ``spec.toml``: like `load_spec`, with the defaults its run was trained with.

    A run folder's spec holds every field; a field added since is missing from it, and its new
    default may not be what the run was trained with. Those fields get their old behaviour here:
    a quantum head without ``readout_gain`` read its probabilities as p (``"none"``).
    """
    path = Path(path)
    raw = read_toml(path)
    for head in (raw.get("model", {}).get("heads") or {}).values():
        if isinstance(head, dict) and head.get("type") == "quantum" and "readout" in head:
            head.setdefault("readout_gain", "none")
    return validate_spec(apply_overrides(raw, overrides), source=str(path))


def spec_data(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec as TOML-ready data: every value, off values spelled out (``grad_clip = "off"``).

    Fields whose None has no TOML spelling are left out, which reads back the
    same when their default is None (true of every built-in field); a plugin
    field that differs is logged as a warning.
    """
    data: dict[str, Any] = _toml_ready(spec.model_dump(mode="json", by_alias=True))
    try:
        changed = _differences(spec.model_dump(), validate_spec(data, source="<written spec>").model_dump())
    except SpecError as exc:
        changed = [key for key, _ in exc.issues]
    if changed:
        log.warning("spec.toml cannot hold these values exactly (None without a TOML spelling): %s",
                    ", ".join(changed))
    return data


def spec_to_toml(spec: ExperimentSpec) -> str:
    """The spec as TOML text that `load_spec` reads back to an identical spec."""
    return tomli_w.dumps(spec_data(spec))


def _toml_ready(value: Any) -> Any:
    """`value` without None entries in tables (TOML has no null), each table's ``type`` first."""
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: kv[0] != "type")
        return {str(k): _toml_ready(v) for k, v in items if v is not None}
    if isinstance(value, list):
        return [_toml_ready(v) for v in value]
    return value


def _differences(a: Any, b: Any, key: str = "") -> list[str]:
    """Dotted key paths where two plain-data trees differ."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [d for k in {**a, **b} for d in _differences(a.get(k), b.get(k), f"{key}.{k}" if key else str(k))]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{key}.{i}")]
    return [] if a == b else [key or "<top level>"]
