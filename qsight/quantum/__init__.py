"""qsight.quantum: circuits, samplers (torch-exact, statevector, aer, ibm-runtime), the quantum head
and its circuit cost.

Importing this package is cheap (no torch, no qiskit): it registers the components with their
pydantic params; implementations load when a factory is called or a heavy name is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsight.components import HEADS, SAMPLERS
from qsight.lazy import lazy_getattr
from qsight.quantum.base import QuantumSampler
from qsight.quantum.params import (
    AerParams,
    IbmRuntimeParams,
    QuantumHeadParams,
    StatevectorParams,
    TorchExactParams,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "AerParams",
    "AerSampler",
    "CircuitSpec",
    "HeadCircuit",
    "IbmRuntimeParams",
    "IbmRuntimeSampler",
    "QuantumHead",
    "QuantumHeadParams",
    "QuantumSampler",
    "StatevectorParams",
    "StatevectorQNNSampler",
    "TorchCircuit",
    "TorchExactParams",
    "TorchExactSampler",
    "build_circuit",
    "circuit_cost",
    "quantum_costs",
]

_LAZY = {
    "AerSampler": "qsight.quantum.aer_sampler",
    "CircuitSpec": "qsight.quantum.circuits",
    "HeadCircuit": "qsight.quantum.circuits",
    "build_circuit": "qsight.quantum.circuits",
    "circuit_cost": "qsight.quantum.cost",
    "quantum_costs": "qsight.quantum.cost",
    "IbmRuntimeSampler": "qsight.quantum.ibm_sampler",
    "QuantumHead": "qsight.quantum.head",
    "StatevectorQNNSampler": "qsight.quantum.qiskit_sampler",
    "TorchCircuit": "qsight.quantum.torch_exact",
    "TorchExactSampler": "qsight.quantum.torch_exact",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


@SAMPLERS.register(
    "torch-exact",
    params=TorchExactParams,
    summary="exact batched statevector in torch with autograd (fast; the default)",
)
def torch_exact_sampler(p: TorchExactParams) -> QuantumSampler:
    import torch

    from qsight.quantum.torch_exact import TorchExactSampler

    return TorchExactSampler(getattr(torch, p.dtype))


@SAMPLERS.register(
    "statevector",
    params=StatevectorParams,
    summary="Qiskit StatevectorSampler via SamplerQNN + TorchConnector (the reference)",
)
def statevector_sampler(p: StatevectorParams) -> QuantumSampler:
    from qsight.quantum.qiskit_sampler import StatevectorQNNSampler

    return StatevectorQNNSampler(p.shots, p.seed)


@SAMPLERS.register(
    "aer", params=AerParams, summary="Qiskit Aer SamplerV2, GPU when present; a fake device's noise with backend"
)
def aer_sampler(p: AerParams) -> QuantumSampler:
    from qsight.quantum.aer_sampler import AerSampler

    return AerSampler(p)


@SAMPLERS.register(
    "ibm-runtime",
    params=IbmRuntimeParams,
    summary="IBM Quantum via qiskit-ibm-runtime, batch mode (QISKIT_IBM_TOKEN); fake_* backends run locally",
)
def ibm_runtime_sampler(p: IbmRuntimeParams) -> QuantumSampler:
    from qsight.quantum.ibm_sampler import IbmRuntimeSampler

    return IbmRuntimeSampler(p)


# The sampler table is validated against the registry: rebuild now that samplers exist.
QuantumHeadParams.model_rebuild(force=True)


@HEADS.register(
    "quantum", params=QuantumHeadParams, summary="parametrised-circuit head (feature map + ansatz on a sampler)"
)
def quantum_head(p: QuantumHeadParams, in_dim: int, num_classes: int) -> nn.Module:
    from qsight.quantum.head import build_head

    return build_head(p, in_dim, num_classes)
