"""Parameters of the quantum components (pure pydantic: importing this is cheap)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field

from qsight.components import SAMPLERS
from qsight.models.params import HeadParams
from registry import ComponentRef, Off, Params

FeatureMap = Literal["zz", "z", "angle"]
Ansatz = Literal["real-amplitudes", "efficient-su2"]
Entanglement = Literal["full", "linear", "reverse_linear", "circular", "pairwise", "none"]
Readout = Literal["probabilities", "expectations", "parity"]


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
    angle_scale: float = Field(math.pi, gt=0.0, le=4 * math.pi, description="angles = scale·tanh(z / T)")
    residual: bool = Field(False, description="add a classical linear branch to the logits")
    sampler: SamplerRef = Field(default_factory=lambda: {"type": "torch-exact"}, validate_default=True)
