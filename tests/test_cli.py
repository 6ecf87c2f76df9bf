"""The command line as a user types it: exit codes, messages, listings, plugins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SMOKE, cli, write_plugin

KINDS = {
    "backbone": {"timm", "tiny-cnn"},
    "head": {"linear", "mlp", "quantum"},
    "sampler": {"statevector", "aer", "torch-exact"},
    "dataset": {"synthetic-fundus", "image-folder", "csv"},
    "sink": {"local", "console", "wandb", "mlflow"},
}


def test_help_lists_the_commands() -> None:
    res = cli("--help")
    assert res.returncode == 0
    for cmd in ("run", "validate", "list-components", "schema"):
        assert cmd in res.stdout


def test_list_components_json_has_every_kind_with_params() -> None:
    res = cli("list-components", "--format", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert set(data) == set(KINDS)
    for kind, names in KINDS.items():
        listed = {e["name"]: e for e in data[kind]}
        assert names <= set(listed), kind
        assert all(e["origin"] == "built-in" and e["summary"] for e in listed.values())
    qubits = next(p for p in {e["name"]: e for e in data["head"]}["quantum"]["params"] if p["name"] == "qubits")
    assert qubits["default"] == 4 and qubits["description"]


def test_list_components_table_and_kind_filter() -> None:
    res = cli("list-components", "--kind", "sampler")
    assert res.returncode == 0 and "torch-exact" in res.stdout and "mlflow" not in res.stdout
    bad = cli("list-components", "--kind", "samplers")
    assert bad.returncode == 2 and "did you mean 'sampler'" in bad.stderr


def test_listing_and_schema_validation_do_not_import_torch() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom qsight.cli import app\n"
        f"r = CliRunner().invoke(app, ['list-components'])\nassert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(app, ['validate', '--schema-only', {str(SMOKE)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'qiskit', 'mlflow', 'wandb') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
def test_validate_exit_codes_and_messages(tmp_path: Path) -> None:
    deep = tmp_path / ("a-folder-with-a-long-name-" * 4) / "smoke.toml"  # past the 80 columns of a pipe
    deep.parent.mkdir()
    deep.write_text(SMOKE.read_text())
    res = cli("validate", str(deep))
    assert res.returncode == 0 and f"valid {deep}: experiment" in res.stdout  # one line, to copy
    res = cli("validate", str(SMOKE), "--set", "model.heads.quantum.qubits=40")
    assert res.returncode == 2
    assert "model.heads.quantum.qubits" in res.stderr and "Traceback" not in res.stderr
    res = cli("validate", str(tmp_path / "missing.toml"))
    assert res.returncode == 2 and "missing.toml: spec file not found" in res.stderr
    res = cli("validate", str(SMOKE), "--set", "stages.0.epochs")
    assert res.returncode == 2 and "expected KEY.PATH=VALUE" in res.stderr and "Traceback" not in res.stderr


def test_bad_flag_is_a_usage_error() -> None:
    res = cli("validate", str(SMOKE), "--frobnicate")
    assert res.returncode == 2 and "No such option" in res.stderr


def test_schema_is_json() -> None:
    res = cli("schema")
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert "stages" in schema["properties"]


@pytest.mark.slow
def test_plugin_components_are_listed_with_their_distribution(tmp_path: Path) -> None:
    body = (
        "from qsight.components import HEADS\n"
        "from qsight.models.params import HeadParams\n"
        "def register() -> None:\n"
        "    HEADS.add('demo-head', lambda p, i, c: None, params=HeadParams, summary='a plugin head')\n"
    )
    env = write_plugin(tmp_path, dist="qsight-demo-plugin", module="qsight_demo_plugin", body=body)
    res = cli("list-components", "--kind", "head", "--format", "json", env=env)
    assert res.returncode == 0, res.stderr
    heads = {e["name"]: e for e in json.loads(res.stdout)["head"]}
    assert heads["demo-head"]["origin"] == "qsight-demo-plugin"
    # and the plugin's type validates in a spec
    res = cli("validate", str(SMOKE), "--set", 'model.heads.extra={type = "demo-head"}', env=env)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("args", [("run",), ("run", "--resume", "nowhere")])
def test_run_bad_input_exits_2(args: tuple[str, ...], tmp_path: Path) -> None:
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
