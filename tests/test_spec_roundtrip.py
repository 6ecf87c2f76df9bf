"""Off values a TOML user can write, and spec.toml files that read back to an identical spec."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from qsight.cli import app
from qsight.config import (
    ExperimentSpec,
    SpecError,
    apply_overrides,
    load_spec,
    spec_data,
    spec_schema,
    spec_to_toml,
    validate_spec,
)
from qsight.sinks import RunInfo
from qsight.sinks.local import LocalSink
from registry import Params, component_type
from tests.helpers import ROOT, smoke_raw

EXPERIMENTS = sorted((ROOT / "experiments").glob("*.toml"))
#: Overrides switching off every optional part of the smoke spec (TOML literals, bare words).
OFF_OVERRIDES = [
    "model.neck=false",
    "model.heads.compressed.input=backbone",
    "model.heads.quantum.input=backbone",
    "model.heads.quantum.sampler.type=aer",
    "model.heads.quantum.sampler.seed=random",
    "model.heads.exact={type = 'quantum', sampler = {type = 'statevector', shots = 'exact', seed = 'random'}}",
    "stages.0.train=['backbone', 'heads.global', 'heads.compressed', 'combiner']",
    "stages.0.grad_clip=off",
    "stages.1.grad_clip=0",
    "stages.1.anneal=false",
    "stages.2.patience=off",
    "train.limit_batches=off",
]


def all_off() -> ExperimentSpec:
    return validate_spec(apply_overrides(smoke_raw(), OFF_OVERRIDES), source="all-off")


def read_back(spec: ExperimentSpec, tmp_path: Path) -> ExperimentSpec:
    path = tmp_path / "written.toml"
    path.write_text(spec_to_toml(spec))
    return load_spec(path)


def components(spec: ExperimentSpec) -> dict[str, Params]:
    """Every component table of a spec by its key path."""
    found: dict[str, Params] = {"data": spec.data, "model.backbone": spec.model.backbone}
    for name, head in spec.model.heads.items():
        found[f"model.heads.{name}"] = head
        sampler = getattr(head, "sampler", None)
        if isinstance(sampler, Params):
            found[f"model.heads.{name}.sampler"] = sampler
    found.update({f"sinks.{label}": sink for label, sink in spec.sinks.items()})
    return found


def table(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_file_reads_back_identical(path: Path, tmp_path: Path) -> None:
    spec = load_spec(path)
    back = read_back(spec, tmp_path)
    assert back.model_dump() == spec.model_dump() and back == spec


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_written_component_tables_keep_their_type_and_own_fields(path: Path) -> None:
    spec = load_spec(path)
    written = tomllib.loads(spec_to_toml(spec))
    for key, params in components(spec).items():
        got = table(written, key)
        assert next(iter(got)) == "type" and got["type"] == component_type(params), key
        own = {f for f, v in params.model_dump(mode="json").items() if v is not None}  # None: the default
        assert set(got) == own, key
        assert type(params).model_validate(got) == params, key


def test_a_spec_with_everything_switched_off_reads_back_identical(tmp_path: Path) -> None:
    spec = all_off()
    heads = spec.model.heads
    assert spec.model.neck is None and spec.train.limit_batches is None
    assert [s.grad_clip for s in spec.stages] == [None, None, 1.0]
    assert [s.anneal for s in spec.stages] == [None, None, None]
    assert [s.patience for s in spec.stages] == [None, None, None]
    assert heads["quantum"].sampler.type == "aer" and heads["quantum"].sampler.seed is None
    assert heads["exact"].sampler.shots is None and heads["exact"].sampler.seed is None

    written = tomllib.loads(spec_to_toml(spec))
    assert written["model"]["neck"] is False and written["train"]["limit_batches"] == "off"
    assert [s["grad_clip"] for s in written["stages"]] == ["off", "off", 1.0]
    assert [s["anneal"] for s in written["stages"]] == [False] * 3
    assert written["model"]["heads"]["quantum"]["sampler"]["seed"] == "random"
    assert written["model"]["heads"]["exact"]["sampler"] == {"type": "statevector", "shots": "exact", "seed": "random"}

    back = read_back(spec, tmp_path)
    assert back.model_dump() == spec.model_dump() and back == spec


@pytest.mark.parametrize("neck", [False, {"enabled": False, "dim": 8}], ids=["false", "enabled-false"])
def test_both_spellings_of_no_neck(neck: Any) -> None:
    raw = apply_overrides(smoke_raw(), OFF_OVERRIDES)
    raw["model"]["neck"] = neck
    spec = validate_spec(raw)
    assert spec.model.neck is None and spec == all_off()


def test_a_neck_left_on_stays_on() -> None:
    spec = validate_spec(apply_overrides(smoke_raw(), ["model.neck.enabled=true", "model.neck.hidden=0"]))
    assert spec.model.neck is not None and spec.model.neck.dim == 4 and spec.model.neck.hidden is None


def test_off_values_are_not_numbers_or_bools_of_another_kind() -> None:
    spec = validate_spec(apply_overrides(smoke_raw(), ["stages.0.grad_clip=0.0"]))
    assert spec.stages[0].grad_clip is None
    with pytest.raises(SpecError) as info:  # false is not 0 here
        validate_spec(apply_overrides(smoke_raw(), ["stages.0.grad_clip=false"]))
    assert "stages.0.grad_clip" in dict(info.value.issues)


@pytest.mark.parametrize(
    ("override", "key", "text"),
    [
        ("stages.0.grad_clip=of", "stages.0.grad_clip", 'or one of "off", 0'),
        ("stages.0.grad_clip=-1", "stages.0.grad_clip", "greater than 0"),
        ("stages.0.patience=0", "stages.0.patience", 'or "off"'),
        ("model.heads.quantum.sampler={type = 'aer', seed = 'fresh'}", "model.heads.quantum.sampler.seed",
         'or "random"'),
        ("model.neck=true", "model.neck", "or false"),
        ("model.neck.dim=0", "model.neck.dim", "greater than or equal to 1"),
        ("stages.1.anneal.start_temp=0", "stages.1.anneal.start_temp", "greater than 0"),
    ],
)
def test_bad_off_values_name_the_key(override: str, key: str, text: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_spec(apply_overrides(smoke_raw(), [override]), source="case.toml")
    issues = dict(info.value.issues)
    assert key in issues, str(info.value)
    assert text in issues[key], issues[key]


def test_validate_command_takes_off_values() -> None:
    args = ["validate", str(ROOT / "experiments" / "smoke.toml")]
    ok = CliRunner().invoke(app, [*args, *(a for o in OFF_OVERRIDES for a in ("--set", o))])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, [*args, "--set", "stages.0.grad_clip=of"])
    assert bad.exit_code == 2 and "stages.0.grad_clip" in bad.output and '"off"' in bad.output


def test_run_folder_spec_toml_reads_back_identical(tmp_path: Path) -> None:
    spec = all_off()
    run_dir = tmp_path / "runs" / "all-off" / "r1"
    sink = LocalSink()
    sink.start(RunInfo(spec.name, "r1", run_dir, tmp_path, spec_data(spec)))
    sink.finish("completed", {})
    assert (run_dir / "spec.toml").read_text() == spec_to_toml(spec)
    assert load_spec(run_dir / "spec.toml") == spec


def test_schema_lists_the_off_values() -> None:
    defs = spec_schema()["$defs"]
    grad_clip = defs["StageConfig"]["properties"]["grad_clip"]
    assert {"enum": ["off", 0]} in grad_clip["anyOf"] and '"off"' in grad_clip["description"]
    patience = defs["StageConfig"]["properties"]["patience"]
    assert patience["default"] == "off" and {"type": "null"} not in patience["anyOf"]
    assert {"enum": [False]} in defs["ModelSpec"]["properties"]["neck"]["anyOf"]
    assert {"enum": ["random"]} in defs["Sampler_aer"]["properties"]["seed"]["anyOf"]


def test_list_components_shows_off_values() -> None:
    from qsight.components import SAMPLERS, load_components

    load_components()
    rows = {r["name"]: r for r in SAMPLERS.get("aer").param_rows()}
    assert rows["seed"]["type"] == 'int | "random"' and rows["seed"]["default"] == 1234
    rows = {r["name"]: r for r in SAMPLERS.get("statevector").param_rows()}
    assert rows["shots"]["type"] == 'int | "exact"' and rows["shots"]["default"] == "exact"


#: A plugin sink whose None default-less field has no TOML spelling (run apart: it registers a component).
PLUGIN = """
import logging, sys
from qsight.components import SINKS
from qsight.config import load_spec, spec_data
from qsight.sinks.params import SinkParams

class LevelParams(SinkParams):
    level: int | None = 3

SINKS.add("levelled", lambda params, run: None, params=LevelParams)
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
spec = load_spec(sys.argv[1], ["sinks.x.type=levelled"])
sink = spec.sinks["x"].model_copy(update={"level": None})
print("level" in spec_data(spec.model_copy(update={"sinks": {"x": sink}}))["sinks"]["x"])
"""


def test_a_none_without_toml_spelling_is_reported(tmp_path: Path) -> None:
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN)
    smoke = str(ROOT / "experiments" / "smoke.toml")
    res = subprocess.run([sys.executable, str(script), smoke], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "cannot hold these values exactly" in res.stdout and "sinks.x.level" in res.stdout
    assert res.stdout.strip().endswith("False")


def test_off_overrides_are_plain_toml(tmp_path: Path) -> None:
    """The same off values written in a file (not --set) load the same spec."""
    path = tmp_path / "off.toml"
    path.write_text(tomli_w.dumps(apply_overrides(smoke_raw(), OFF_OVERRIDES)))
    assert load_spec(path) == all_off()


def test_a_run_written_before_readout_gain_keeps_its_reading(tmp_path: Path) -> None:
    """A run folder's spec.toml from before ``readout_gain`` existed (a full dump without that key) is
    read with the behaviour it was trained with ("none"); a written value, and a user's new spec without
    the key, keep theirs. Fails without `load_run_spec`: old runs would serve with the new gain."""
    from qsight.config import load_run_spec

    flagship = ROOT / "experiments" / "hybrid.toml"
    written = tomllib.loads(spec_to_toml(load_spec(flagship)))
    old = tmp_path / "old.toml"
    del written["model"]["heads"]["quantum"]["readout_gain"]
    old.write_text(tomli_w.dumps(written))
    assert load_run_spec(old).model.heads["quantum"].readout_gain == "none"
    assert load_spec(old).model.heads["quantum"].readout_gain == "uniform"
    new = tmp_path / "new.toml"
    new.write_text(spec_to_toml(load_spec(flagship)))
    assert load_run_spec(new).model.heads["quantum"].readout_gain == "uniform"
    assert load_run_spec(new) == load_spec(new)
