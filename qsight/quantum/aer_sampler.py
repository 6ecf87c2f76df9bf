"""The `aer` sampler: ``qiskit_aer.primitives.SamplerV2`` with shots, seed, noise and a device.

Aer's SamplerV2 has no exact mode: it always samples (``shots=None`` at ``run`` silently means
the default 1024 shots). Gradients use the parameter-shift rule on a *gate-angle* circuit, where
every parametrised gate gets its own parameter g_k = e_k(inputs, weights): the unshifted and
all ±π/2-shifted angle sets of a batch go to Aer as one PUB (a parameter-value array of shape
(B, 1 + 2K, K)), and torch's autograd applies the chain rule through e_k.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ParameterExpression, ParameterVector
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, depolarizing_error
from qiskit_aer.primitives import SamplerV2
from torch import Tensor, nn

from qsight.errors import BadInputError
from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.expressions import PolyMap, param_index, to_poly
from qsight.quantum.params import AerParams
from qsight.quantum.torch_exact import SUPPORTED

log = logging.getLogger("qsight.quantum")
_TWO_QUBIT = ["cx", "cz", "cp", "crz", "rzz", "swap"]
_ONE_QUBIT = [g for g in SUPPORTED if g not in _TWO_QUBIT]


def choose_device(requested: str) -> tuple[str, dict[str, object]]:
    """'CPU' or 'GPU' for Aer, and what the probes saw; 'GPU' when none is usable is an error."""
    aer_devices = tuple(AerSimulator().available_devices())
    cuda = torch.cuda.is_available()
    probes: dict[str, object] = {"aer_devices": list(aer_devices), "torch_cuda": cuda}
    if requested == "GPU" and "GPU" not in aer_devices:
        raise BadInputError(
            f"aer sampler: device 'GPU' asked for but Aer offers only {list(aer_devices)} "
            "(install qiskit-aer-gpu on a CUDA machine, or use device = 'auto' or 'CPU')"
        )
    device = requested if requested != "auto" else ("GPU" if "GPU" in aer_devices and cuda else "CPU")
    return device, probes


def noise_model(p: AerParams) -> NoiseModel | None:
    """Depolarising errors on every 1- and 2-qubit gate, or None when both rates are 0."""
    if p.depolarizing_1q == 0 and p.depolarizing_2q == 0:
        return None
    model = NoiseModel()
    if p.depolarizing_1q > 0:
        model.add_all_qubit_quantum_error(depolarizing_error(p.depolarizing_1q, 1), _ONE_QUBIT)
    if p.depolarizing_2q > 0:
        model.add_all_qubit_quantum_error(depolarizing_error(p.depolarizing_2q, 2), _TWO_QUBIT)
    return model


def probabilities(bits: Any, n: int) -> np.ndarray:
    """Outcome frequencies (…, 2^n) from a SamplerV2 BitArray of measured bits."""
    arr: np.ndarray = np.asarray(bits.array)  # (..., shots, bytes), big-endian bytes
    ints: np.ndarray = np.zeros(arr.shape[:-1], dtype=np.int64)
    for i in range(arr.shape[-1]):
        ints = (ints << 8) | arr[..., i]
    lead = ints.shape[:-1]
    rows = ints.reshape(-1, ints.shape[-1])
    offsets = np.arange(rows.shape[0])[:, None] * 2**n
    counts = np.bincount((rows + offsets).ravel(), minlength=rows.shape[0] * 2**n)
    return np.asarray(counts.reshape(*lead, 2**n) / ints.shape[-1], dtype=np.float64)


def gate_angle_circuit(hc: HeadCircuit) -> tuple[QuantumCircuit, list[Any]]:
    """The circuit with one fresh parameter g[k] per parametrised gate (a ParameterVector, so
    Qiskit's parameter order is k's order), and each gate's angle as a polynomial of the
    head's (inputs, weights)."""
    src = transpile(hc.circuit, basis_gates=SUPPORTED, optimization_level=0)
    index = param_index(hc.inputs, hc.weights)
    angled = [ins for ins in src.data if any(_is_param(v) for v in ins.operation.params)]
    g = ParameterVector("g", len(angled))
    out = QuantumCircuit(src.num_qubits)
    polys: list[Any] = []
    for ins in src.data:
        op = ins.operation
        if any(_is_param(v) for v in op.params):
            if len(op.params) != 1:
                raise NotImplementedError(f"aer gradients: gate {op.name!r} has several angles")
            polys.append(to_poly(op.params[0], index))
            op = op.copy()
            op.params = [g[len(polys) - 1]]
        out.append(op, [src.find_bit(q).index for q in ins.qubits])
    out.measure_all()
    return out, polys


def _is_param(v: object) -> bool:
    return isinstance(v, ParameterExpression) and bool(v.parameters)


class _ShiftFn(torch.autograd.Function):
    """g (B, K) → probabilities (B, 2^n); the backward pass uses the shifted results."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, run: Any, shifts: bool) -> Tensor:
        probs = run(g.detach().cpu().numpy(), shifts)  # (B, 1 [+ 2K], 2^n)
        ctx.shifted = probs[:, 1:] if shifts else None
        return torch.from_numpy(probs[:, 0]).to(g.device, g.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        if ctx.shifted is None:
            return None, None, None
        k = ctx.shifted.shape[1] // 2
        diff = (ctx.shifted[:, :k] - ctx.shifted[:, k:]) / 2.0  # (B, K, 2^n)
        d = torch.from_numpy(diff).to(grad.device, grad.dtype)
        return torch.einsum("bks,bs->bk", d, grad), None, None


class AerCircuit(nn.Module):
    """(angles, weights) → sampled probabilities; parameter-shift gradients (one PUB a call)."""

    def __init__(self, hc: HeadCircuit, sampler: SamplerV2, gradient: bool, lock: threading.Lock) -> None:
        super().__init__()
        self.circuit, polys = gate_angle_circuit(hc)
        self.angles = PolyMap(polys, len(hc.inputs) + len(hc.weights), len(hc.inputs))
        self.n, self.n_inputs = hc.num_qubits, len(hc.inputs)
        self.sampler, self.gradient, self.lock = sampler, gradient, lock

    def _run(self, g: np.ndarray, shifts: bool) -> np.ndarray:
        sets = g[:, None, :]
        if shifts:
            k = g.shape[1]
            eye = np.eye(k)[None] * (np.pi / 2)
            sets = np.concatenate([sets, g[:, None, :] + eye, g[:, None, :] - eye], axis=1)
        with self.lock:
            result = self.sampler.run([(self.circuit, sets)]).result()
        return probabilities(result[0].data.meas, self.n)

    def forward(self, angles: Tensor, weights: Tensor) -> Tensor:
        x = angles.to("cpu", torch.float64)
        w = weights.to("cpu", torch.float64)
        p_full = torch.cat([x, w.expand(x.shape[0], -1)], 1)
        p_w = torch.cat([w.new_zeros(1, self.n_inputs), w[None]], 1)
        g = self.angles(p_full, p_w).expand(x.shape[0], -1)
        shifts = self.gradient and torch.is_grad_enabled() and g.requires_grad and g.shape[1] > 0
        out: Tensor = _ShiftFn.apply(g, self._run, shifts)
        return out.to(angles.device)


class AerSampler:
    """Qiskit Aer SamplerV2 on the chosen device (see the module docstring)."""

    name = "aer"

    def __init__(self, p: AerParams) -> None:
        self.params = p
        self.device, self.probes = choose_device(p.device)
        self.backend_options: dict[str, Any] = {"device": self.device}
        if p.method != "automatic":
            self.backend_options["method"] = p.method
        model = noise_model(p)
        if model is not None:
            self.backend_options["noise_model"] = model
        self.sampler = SamplerV2(default_shots=p.shots, seed=p.seed, options={"backend_options": self.backend_options})
        self.lock = threading.Lock()
        log.info(
            "aer sampler on %s (asked %s; probes %s); backend options %s, shots %d, seed %s",
            self.device,
            p.device,
            self.probes,
            self._options(),
            p.shots,
            p.seed,
        )

    def _options(self) -> dict[str, object]:
        return {k: (str(v) if k == "noise_model" else v) for k, v in self.backend_options.items()}

    def bind(self, circuit: HeadCircuit) -> nn.Module:
        return AerCircuit(circuit, self.sampler, self.params.gradient != "none", self.lock)

    def describe(self) -> dict[str, object]:
        p = self.params
        return {
            "sampler": self.name,
            "device": self.device,
            "requested_device": p.device,
            **self.probes,
            "backend_options": self._options(),
            "shots": p.shots,
            "seed": p.seed,
            "exact": False,
            "depolarizing": {"1q": p.depolarizing_1q, "2q": p.depolarizing_2q},
            "gradient": p.gradient,
            "note": "Aer SamplerV2 always samples; it has no exact mode",
        }
