"""Spec loading and validation: every experiment file is valid, and a corpus of bad ones is not."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qsight.config.overrides import OverrideError, apply_overrides, parse_value
from qsight.config.spec import ExperimentSpec, SpecError, StageConfig, spec_schema, validate_spec
from qsight.config.toml_io import load_spec
from qsight.errors import BadInputError
from tests.helpers import ROOT, SMOKE, smoke_raw

EXPERIMENTS = sorted((ROOT / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_file_is_valid(path: Path) -> None:
    spec = load_spec(path)
    assert isinstance(spec, ExperimentSpec) and spec.stages
    assert all(isinstance(s, StageConfig) for s in spec.stages)


def test_components_are_validated_by_their_own_params() -> None:
    spec = load_spec(SMOKE)
    quantum = spec.model.heads["quantum"]
    assert quantum.qubits == 3
    assert quantum.sampler.type == "torch-exact"
    assert spec.model.heads["global"].type == "linear"


def test_spec_and_stage_are_frozen() -> None:
    spec = load_spec(SMOKE)
    with pytest.raises(Exception, match="frozen"):
        spec.stages[0].epochs = 3  # type: ignore[misc]


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _delete(key: str) -> Mutation:
    return lambda d: d.pop(key)


# (case id, mutation, key path the message must name, text the message must contain)
BAD_SPECS: list[tuple[str, Mutation, str, str]] = [
    ("unknown-top-key", _set("nmae", "x"), "nmae", "unknown key"),
    ("unknown-head-type", _set("model.heads.quantum.type", "quantun"), "model.heads.quantum",
     "did you mean 'quantum'"),
    ("unknown-backbone", _set("model.backbone.type", "timmm"), "model.backbone", "did you mean 'timm'"),
    ("unknown-sampler", _set("model.heads.quantum.sampler", {"type": "torch-exat"}),
     "model.heads.quantum.sampler", "did you mean 'torch-exact'"),
    ("unknown-sink", _set("sinks.mlflow.type", "mlfow"), "sinks.mlflow", "did you mean 'mlflow'"),
    ("unknown-dataset", _set("data.type", "synthetic"), "data", "did you mean 'synthetic-fundus'"),
    ("head-without-type", _set("model.heads.extra", {"input": "neck"}), "model.heads.extra", "missing 'type'"),
    ("seed-wrong-type", _set("seed", "abc"), "seed", "integer"),
    ("qubits-out-of-range", _set("model.heads.quantum.qubits", 30), "model.heads.quantum.qubits", "16"),
    ("unknown-head-param", _set("model.heads.quantum.qbits", 3), "model.heads.quantum.qbits", "unknown key"),
    ("unknown-sampler-param", _set("model.heads.quantum.sampler", {"type": "aer", "shotz": 3}),
     "model.heads.quantum.sampler.shotz", "unknown key"),
    ("stage-missing-head", _set("stages.1.heads", ["quantm"]), "stages.1.heads", "did you mean 'quantum'"),
    ("stage-missing-module", _set("stages.1.train", ["heads.quantm"]), "stages.1.train",
     "did you mean 'heads.quantum'"),
    ("zero-epochs", _set("stages.0.epochs", 0), "stages.0.epochs", "greater than or equal to 1"),
    ("negative-lr", _set("stages.0.lr", -1.0), "stages.0.lr", "greater than 0"),
    ("bad-data-parallel", _set("stages.1.data_parallel", "sometimes"), "stages.1.data_parallel", "auto"),
    ("no-stages", _delete("stages"), "stages", "required"),
    ("no-active-heads", _set("stages.0.heads", []), "stages.0.heads", "at least 1"),
    ("duplicate-stage", _set("stages.1.name", "classical"), "stages.1.name", "duplicate"),
    ("loss-weight-inactive", _set("stages.0.loss_weights", {"quantum": 1.0}), "stages.0.loss_weights.quantum",
     "not active"),
    ("monitor-inactive", _set("stages.1.monitor", "val/global/qwk"), "stages.1.monitor", "not active"),
    ("monitor-malformed", _set("stages.0.monitor", "qwk"), "stages.0.monitor", "pattern"),
    ("head-input-literal", _set("model.heads.global.input", "nek"), "model.heads.global.input", "'backbone'"),
    ("neck-dim-zero", _set("model.neck.dim", 0), "model.neck.dim", "greater than or equal to 1"),
    ("batch-size-zero", _set("train.batch_size", 0), "train.batch_size", "greater than or equal to 1"),
    ("image-size-small", _set("data.image_size", 5), "data.image_size", "16"),
    ("anneal-zero-temp", _set("stages.1.anneal.start_temp", 0), "stages.1.anneal.start_temp", "greater than 0"),
    ("name-with-space", _set("name", "my exp"), "name", "pattern"),
    ("head-named-ensemble", _set("model.heads.ensemble", {"type": "linear"}), "model", "ensemble"),
    ("stages-not-list", _set("stages", "x"), "stages", "tuple"),
    ("stage-typo-key", _set("stages.0.epcohs", 2), "stages.0.epcohs", "unknown key"),
    ("no-heads", _set("model.heads", {}), "model.heads", "at least 1"),
    ("bad-device", _set("train.device", "tpu"), "train.device", "'cuda'"),
    ("explain-zero", _set("explain.samples", 0), "explain.samples", "greater than or equal to 1"),
    ("cache-with-trainable-backbone", _set("stages.0.cache_features", True), "stages.0.cache_features",
     "backbone"),
    ("aer-device", _set("model.heads.quantum.sampler", {"type": "aer", "device": "TPU"}),
     "model.heads.quantum.sampler.device", "'GPU'"),
]


@pytest.mark.parametrize(("case", "mutate", "key", "text"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_malformed_specs_name_the_key(case: str, mutate: Mutation, key: str, text: str) -> None:
    raw = copy.deepcopy(smoke_raw())
    mutate(raw)
    with pytest.raises(SpecError) as info:
        validate_spec(raw, source="case.toml")
    keys = [k for k, _ in info.value.issues]
    assert key in keys, f"{case}: {info.value}"
    message = dict(info.value.issues)[key]
    assert text in message, f"{case}: {message}"
    assert str(info.value).startswith("case.toml: invalid spec")


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text('name = "x"\n[model\n')
    with pytest.raises(BadInputError, match=r"broken\.toml: TOML syntax error"):
        load_spec(bad)


def test_missing_and_directory_spec_paths(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"nope\.toml: spec file not found"):
        load_spec(tmp_path / "nope.toml")
    with pytest.raises(BadInputError, match="spec file not found"):
        load_spec(tmp_path)


@pytest.mark.parametrize(
    ("override", "text"),
    [
        ("stages.0.epochs", "expected KEY.PATH=VALUE"),
        ("=3", "bad key path"),
        ("stages..lr=1", "bad key path"),
        ("seed=", "missing value"),
        ("stages.9.lr=1e-3", "index 9 out of range"),
        ("stages.first.lr=1e-3", "is a list"),
        ("seed.x=1", "is a value"),
        ("name=[1,", "not a TOML literal"),
    ],
)
def test_bad_overrides(override: str, text: str) -> None:
    with pytest.raises(OverrideError, match=text) as info:
        apply_overrides(smoke_raw(), [override])
    assert info.value.exit_code == 2 and override in str(info.value)


def test_overrides_apply_toml_literals_with_list_indices() -> None:
    raw = apply_overrides(
        smoke_raw(),
        ["stages.1.lr=1e-4", 'model.heads.quantum.sampler.type="aer"', "train.device=cpu",
         "stages.0.heads=['global']", "explain.enabled=false"],
    )
    spec = validate_spec(raw)
    assert spec.stages[1].lr == 1e-4 and spec.train.device == "cpu" and spec.stages[0].heads == ("global",)
    assert spec.model.heads["quantum"].sampler.type == "aer"
    assert spec.explain.enabled is False
    assert smoke_raw()["stages"][1]["lr"] != 1e-4  # the original is untouched


def test_override_values_are_typed() -> None:
    assert parse_value("2") == 2 and parse_value("1e-4") == 1e-4 and parse_value("true") is True
    assert parse_value('"aer"') == "aer" and parse_value("aer") == "aer"
    assert parse_value("[1, 2]") == [1, 2] and parse_value("{a = 1}") == {"a": 1}


def test_schema_lists_every_registered_component() -> None:
    text = str(spec_schema())
    for name in ("synthetic-fundus", "timm", "tiny-cnn", "quantum", "torch-exact", "aer", "mlflow", "wandb"):
        assert name in text
