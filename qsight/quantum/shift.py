"""Sampled circuits with parameter-shift gradients, shared by the `aer` and `ibm-runtime` samplers.

Gradients use the parameter-shift rule on a *gate-angle* circuit, where every parametrised gate
gets its own parameter g_k = e_k(inputs, weights): the unshifted and all ±π/2-shifted angle sets
of a batch go to the sampler as one PUB (a parameter-value array of shape (B, 1 + 2K, K)), and
torch's autograd applies the chain rule through e_k. The rule is exact for gates exp(-i g G/2)
with G² = 1 (rx, ry, rz, p, rzz …) as long as each g_k sets one gate's angle, up to sign, which
`check_shift_rule` verifies on a transpiled circuit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ParameterExpression, ParameterVector
from qiskit.circuit.library import RZGate
from torch import Tensor, nn

from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.expressions import PolyMap, param_index, to_poly
from qsight.quantum.gates import SUPPORTED

RunSets = Callable[[np.ndarray], np.ndarray]
"""Angle sets (B, S, K) → outcome probabilities (B, S, 2^n), one sampler call."""


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
    """The measured circuit with one fresh parameter g[k] per parametrised gate (a ParameterVector,
    so Qiskit's parameter order is k's order), and each gate's angle as a polynomial of the head's
    (inputs, weights).

    A phase gate p(g) becomes rz(g): the same probabilities, and no parametrised global phase (with
    one, Qiskit 2.6's basis translation slows down exponentially with the circuit's size).
    """
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
                raise NotImplementedError(f"sampled gradients: gate {op.name!r} has several angles")
            polys.append(to_poly(op.params[0], index))
            if op.name == "p":
                op = RZGate(g[len(polys) - 1])
            else:
                op = op.copy()
                op.params = [g[len(polys) - 1]]
        out.append(op, [src.find_bit(q).index for q in ins.qubits])
    out.measure_all()
    return out, polys


def _is_param(v: object) -> bool:
    return isinstance(v, ParameterExpression) and bool(v.parameters)


def check_shift_rule(circuit: QuantumCircuit, count: int) -> None:
    """Raise unless each of the `count` parameters g[k] sets exactly one gate angle as ±g[k] + c."""
    seen: dict[str, int] = {}
    for ins in circuit.data:
        for value in ins.operation.params:
            if not _is_param(value):
                continue
            for p in value.parameters:
                slope = value.gradient(p)
                if _is_param(slope) or abs(abs(float(slope)) - 1.0) > 1e-12:
                    raise NotImplementedError(f"gate {ins.operation.name}({value}): shift rule needs slope ±1")
                seen[p.name] = seen.get(p.name, 0) + 1
    bad = {k: v for k, v in seen.items() if v != 1}
    if len(seen) != count or bad:
        raise NotImplementedError(
            f"transpiled circuit keeps {len(seen)} of {count} gate angles, some in several gates ({bad}); "
            "the parameter-shift rule does not apply (use gradient = 'none' or a lower optimization_level)"
        )


def shifted_sets(g: np.ndarray, shifts: bool) -> np.ndarray:
    """(B, K) angles → (B, 1 [+ 2K], K): the angles, then each angle +π/2, then each −π/2."""
    sets = g[:, None, :]
    if not shifts:
        return sets
    eye = np.eye(g.shape[1])[None] * (np.pi / 2)
    return np.concatenate([sets, sets + eye, sets - eye], axis=1)


class _ShiftFn(torch.autograd.Function):
    """g (B, K) → probabilities (B, 2^n); the backward pass uses the shifted results."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, run: RunSets, shifts: bool) -> Tensor:
        probs = run(shifted_sets(g.detach().cpu().numpy(), shifts))  # (B, 1 [+ 2K], 2^n)
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


class ShiftCircuit(nn.Module):
    """(angles, weights) → sampled probabilities through `run` (one call a batch, under `lock`);
    parameter-shift gradients when `gradient`."""

    def __init__(self, hc: HeadCircuit, polys: list[Any], run: RunSets, gradient: bool,
                 lock: threading.Lock) -> None:
        super().__init__()
        self.angles = PolyMap(polys, len(hc.inputs) + len(hc.weights), len(hc.inputs))
        self.n, self.n_inputs = hc.num_qubits, len(hc.inputs)
        self.run, self.gradient, self.lock = run, gradient, lock

    def _run(self, sets: np.ndarray) -> np.ndarray:
        with self.lock:
            return self.run(sets)

    def forward(self, angles: Tensor, weights: Tensor) -> Tensor:
        x = angles.to("cpu", torch.float64)
        w = weights.to("cpu", torch.float64)
        p_full = torch.cat([x, w.expand(x.shape[0], -1)], 1)
        p_w = torch.cat([w.new_zeros(1, self.n_inputs), w[None]], 1)
        g = self.angles(p_full, p_w).expand(x.shape[0], -1)
        shifts = self.gradient and torch.is_grad_enabled() and g.requires_grad and g.shape[1] > 0
        out: Tensor = _ShiftFn.apply(g, self._run, shifts)
        return out.to(angles.device)
