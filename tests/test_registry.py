"""The generic registry: registration, lookup, schema unions and entry-point plugins."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, Field, ValidationError

from registry import (
    BUILTIN,
    ComponentRef,
    DuplicateComponentError,
    Params,
    Registry,
    UnknownComponentError,
    load_plugins,
)
from tests.helpers import write_plugin


class ShotParams(Params):
    shots: int = Field(1024, ge=1, description="samples per circuit")


def make() -> Registry[str]:
    reg: Registry[str] = Registry("sampler")

    @reg.register("torch-exact", summary="exact statevector")
    def _exact(p: Params) -> str:
        return "exact"

    @reg.register("aer", params=ShotParams)
    def _aer(p: ShotParams) -> str:
        """Aer with shots."""
        return f"aer:{p.shots}"

    return reg


def test_register_get_build_and_list() -> None:
    reg = make()
    entry = reg.get("aer")
    assert entry.build(ShotParams(shots=7)) == "aer:7"
    assert entry.summary == "Aer with shots."  # taken from the docstring
    assert entry.origin == BUILTIN
    assert reg.names() == ["aer", "torch-exact"]
    assert reg.names("torch-*") == ["torch-exact"]
    assert "aer" in reg and len(reg) == 2
    row = entry.param_rows()[0]
    assert row == {"name": "shots", "type": "int", "required": False, "default": 1024,
                   "description": "samples per circuit"}


def test_duplicate_name_is_an_error() -> None:
    reg = make()
    with pytest.raises(DuplicateComponentError, match="already registered"):
        reg.add("aer", lambda p: "again")


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownComponentError, match="did you mean 'torch-exact'"):
        make().get("torch-exat")
    with pytest.raises(UnknownComponentError) as info:
        make().get("zzz")
    assert "did you mean" not in str(info.value) and "known: aer, torch-exact" in str(info.value)


def test_ref_validates_params_of_the_named_component() -> None:
    reg = make()

    class Holder(BaseModel):
        sampler: Annotated[Params, ComponentRef(reg, default="torch-exact")]

    aer = Holder.model_validate({"sampler": {"type": "aer", "shots": 5}}).sampler
    assert isinstance(aer, ShotParams) and aer.shots == 5 and aer.type == "aer"
    assert Holder.model_validate({"sampler": {}}).sampler.type == "torch-exact"
    with pytest.raises(ValidationError, match="did you mean 'aer'"):
        Holder.model_validate({"sampler": {"type": "aar"}})
    with pytest.raises(ValidationError) as info:
        Holder.model_validate({"sampler": {"type": "aer", "shots": 0}})
    assert info.value.errors()[0]["loc"][-1] == "shots"
    schema = Holder.model_json_schema()
    assert set(schema["properties"]["sampler"]["discriminator"]["mapping"]) == {"aer", "torch-exact"}


def test_plugins_load_once_with_their_distribution_as_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = make()
    group = "registry_tests.components"
    monkeypatch.setitem(sys.modules, "registry_tests_target", type(sys)("registry_tests_target"))
    sys.modules["registry_tests_target"].REG = reg  # type: ignore[attr-defined]
    body = (
        "import registry_tests_target as t\n"
        "def register():\n"
        "    t.REG.add('plugged', lambda p: 'plugged', summary='from a plugin')\n"
    )
    write_plugin(tmp_path, dist="demo-plugin", module="demo_plugin_mod", body=body, group=group)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))  # the same distribution seen twice
    plugins = load_plugins(group)
    load_plugins(group)  # a second discovery loads nothing new
    assert [p.distribution for p in plugins] == ["demo-plugin"]
    entry = reg.get("plugged")
    assert entry.origin == "demo-plugin" and entry.build(Params()) == "plugged"
    assert reg.get("aer").origin == BUILTIN
