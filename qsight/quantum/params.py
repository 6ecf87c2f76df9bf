"""Parameters of the quantum components (pure pydantic: importing this is cheap)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from qsight.components import SAMPLERS
from qsight.models.params import HeadParams
from qsight.quantum.backend_names import check_device_name, check_fake_backend
from registry import ComponentRef, Off, Params

FeatureMap = Literal["zz", "z", "angle"]
Ansatz = Literal["real-amplitudes", "efficient-su2"]
Entanglement = Literal["full", "linear", "reverse_linear", "circular", "pairwise", "none"]
Readout = Literal["probabilities", "expectations", "parity"]
OptimizationLevel = Annotated[int, Field(ge=0, le=3)]


class TorchExactParams(Params):
    """Exact batched statevector simulated in torch (autograd gradients)."""

    dtype: Literal["float64", "float32"] = Field(
        "float64", description="real precision (complex128 / complex64 amplitudes), of the whole quantum head"
    )


class StatevectorParams(Params):
    """Qiskit's reference statevector sampler through SamplerQNN + TorchConnector."""

    shots: Annotated[int | None, Off("exact")] = Field(
        None, ge=1, le=10_000_000, description='shots per circuit; "exact" (default): exact probabilities'
    )
    seed: Annotated[int | None, Off("random")] = Field(
        None, ge=0, description='sampling seed (with shots); "random" (default): unseeded'
    )


class AerParams(Params):
    """Qiskit Aer SamplerV2; note that it has no exact mode (it always samples `shots`)."""

    shots: int = Field(1024, ge=1, le=10_000_000, description="shots per circuit (Aer always samples)")
    seed: Annotated[int | None, Off("random")] = Field(
        1234, ge=0, description='simulator seed; "random": a fresh one per call'
    )
    device: Literal["auto", "CPU", "GPU"] = Field(
        "auto", description="'auto' takes the GPU when Aer and CUDA both offer one"
    )
    method: Literal["automatic", "statevector", "density_matrix"] = Field(
        "automatic", description="Aer simulation method"
    )
    depolarizing_1q: float = Field(0.0, ge=0.0, le=1.0, description="depolarising error on each 1-qubit gate")
    depolarizing_2q: float = Field(0.0, ge=0.0, le=1.0, description="depolarising error on each 2-qubit gate")
    gradient: Literal["parameter-shift", "none"] = Field(
        "parameter-shift", description="'none' stops gradients at the circuit (evaluation only)"
    )
    backend: str | None = Field(
        None,
        description="a qiskit-ibm-runtime fake device (e.g. 'fake_torino'): transpile to it, sample its noise",
    )
    optimization_level: OptimizationLevel = Field(2, description="transpiler optimisation level (with backend)")

    @field_validator("backend")
    @classmethod
    def _known_fake_backend(cls, name: str | None) -> str | None:
        return None if name is None else check_fake_backend(name)

    @model_validator(mode="after")
    def _one_noise_source(self) -> AerParams:
        if self.backend is not None and (self.depolarizing_1q or self.depolarizing_2q):
            raise ValueError("set either backend (its calibrated noise) or depolarizing_1q/2q, not both")
        return self


class IbmRuntimeParams(Params):
    """IBM Quantum through qiskit-ibm-runtime's client-side Sampler in batch mode.

    A real device (e.g. 'ibm_torino') needs an API token in QISKIT_IBM_TOKEN; a fake backend
    ('fake_torino') runs the same code in qiskit-ibm-runtime's local testing mode.
    """

    backend: str = Field(description="IBM Quantum device name, or a fake backend for local mode")
    shots: int = Field(1024, ge=1, le=1_000_000, description="shots per circuit")
    optimization_level: OptimizationLevel = Field(2, description="transpiler optimisation level")
    channel: Literal["ibm_quantum_platform", "ibm_cloud"] | None = Field(
        None, description="IBM Quantum channel (real devices); none: the client's default"
    )
    instance: str | None = Field(None, description="IBM Quantum instance (CRN or name); none: any available")
    seed: Annotated[int | None, Off("random")] = Field(
        1234, ge=0, description='simulator seed in local mode; "random": a fresh one per call'
    )
    gradient: Literal["parameter-shift", "none"] = Field(
        "parameter-shift",
        description="'none' stops gradients at the circuit; parameter shift runs 1 + 2K circuits a sample",
    )

    @field_validator("backend")
    @classmethod
    def _device_name(cls, name: str) -> str:
        return check_device_name(name)


SamplerRef = Annotated[Params, ComponentRef(SAMPLERS, default="torch-exact")]


class QuantumHeadParams(HeadParams):
    """A parametrised circuit head: LayerNorm → Linear → angles → circuit → readout → logits."""

    qubits: int = Field(4, ge=1, le=16, description="circuit width (inputs the circuit reads)")
    feature_map: FeatureMap = Field("zz", description="data encoding: zz, z or angle (RY)")
    feature_map_reps: int = Field(2, ge=1, le=8, description="feature map repetitions")
    feature_map_entanglement: Entanglement = Field(
        "full", description="pairs of the zz/angle feature map ('none': no pairs; zz becomes z)"
    )
    ansatz: Ansatz = Field("real-amplitudes", description="trainable circuit")
    reps: int = Field(2, ge=1, le=16, description="ansatz repetitions")
    entanglement: Entanglement = Field(
        "reverse_linear", description="pairs of the ansatz ('none': no entangling gates, an ablation)"
    )
    readout: Readout = Field(
        "probabilities",
        description="probabilities (2^n), expectations (<Z_q>, n) or parity (<Z_q>, <Z_q Z_r>)",
    )
    readout_gain: Literal["uniform", "none"] = Field(
        "uniform",
        description="probabilities read as 2^n·p (1 where uniform: O(1) features at any width) or as p",
    )
    angle_scale: float = Field(math.pi, gt=0.0, le=4 * math.pi, description="angles = scale·tanh(z / T)")
    residual: bool = Field(False, description="add a classical linear branch to the logits")
    sampler: SamplerRef = Field(default_factory=lambda: {"type": "torch-exact"}, validate_default=True)
