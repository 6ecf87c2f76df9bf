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
    spec_schema,
    validate_spec,
)
from qsight.config.toml_io import load_run_spec, load_spec, read_toml, spec_data, spec_to_toml

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
    "load_run_spec",
    "load_spec",
    "parse_override",
    "parse_value",
    "read_toml",
    "spec_data",
    "spec_schema",
    "spec_to_toml",
    "validate_spec",
]
