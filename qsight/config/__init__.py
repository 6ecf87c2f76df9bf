"""Experiment specs: pydantic models, ``--set`` overrides and TOML I/O (cheap to import: no torch)."""

from __future__ import annotations

from qsight.config.overrides import OverrideError, apply_overrides, parse_override, parse_value
from qsight.config.spec import (
    AnnealConfig,
    ExperimentSpec,
    ExplainSpec,
    ModelSpec,
    OutputSpec,
    SpecError,
    StageConfig,
    TrainSpec,
    ensure_ready,
    load_spec,
    spec_schema,
    validate_spec,
)

__all__ = [
    "AnnealConfig",
    "ExperimentSpec",
    "ExplainSpec",
    "ModelSpec",
    "OutputSpec",
    "OverrideError",
    "SpecError",
    "StageConfig",
    "TrainSpec",
    "apply_overrides",
    "ensure_ready",
    "load_spec",
    "parse_override",
    "parse_value",
    "spec_schema",
    "validate_spec",
]
