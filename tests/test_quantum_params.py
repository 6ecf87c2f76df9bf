"""Quantum component params: bounds, nested sampler tables, registration and import cost."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from qsight.components import HEADS, SAMPLERS
from qsight.quantum import AerParams, QuantumHeadParams, TorchExactParams
from tests.helpers import heavy_imports


def test_components_are_registered() -> None:
    assert {"torch-exact", "statevector", "aer"} <= set(SAMPLERS.names())
    assert "quantum" in HEADS
    assert HEADS.get("quantum").params is QuantumHeadParams


@pytest.mark.parametrize("qubits", [0, 17])
def test_qubits_out_of_range_rejected(qubits: int) -> None:
    with pytest.raises(ValidationError, match="qubits"):
        QuantumHeadParams(qubits=qubits)


def test_sampler_defaults_to_torch_exact() -> None:
    p = QuantumHeadParams()
    assert getattr(p.sampler, "type") == "torch-exact"  # noqa: B009
    assert isinstance(p.sampler, TorchExactParams)


def test_sampler_table_is_validated_as_its_component() -> None:
    p = QuantumHeadParams.model_validate({"sampler": {"type": "aer", "shots": 64, "device": "CPU"}})
    assert isinstance(p.sampler, AerParams) and p.sampler.shots == 64
    with pytest.raises(ValidationError, match="did you mean 'torch-exact'"):
        QuantumHeadParams.model_validate({"sampler": {"type": "torch-exat"}})
    with pytest.raises(ValidationError):
        QuantumHeadParams.model_validate({"sampler": {"type": "aer", "shots": 0}})
    with pytest.raises(ValidationError):
        QuantumHeadParams.model_validate({"sampler": {"type": "torch-exact", "shots": 5}})
    with pytest.raises(ValidationError):
        QuantumHeadParams.model_validate({"sampler": {"type": "aer", "device": "TPU"}})


@pytest.mark.parametrize(
    "bad", [{"feature_map": "yy"}, {"ansatz": "qaoa"}, {"reps": 0}, {"readout": "x"}, {"angle_scale": 0}]
)
def test_other_bad_values_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        QuantumHeadParams.model_validate(bad)


def test_import_is_light() -> None:
    assert heavy_imports("qsight.quantum", ("torch", "qiskit")) == []
