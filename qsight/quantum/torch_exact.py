"""The `torch-exact` sampler: the head's Qiskit circuit compiled to a batched torch statevector.

The circuit is cut into blocks. A *layer* block holds one-qubit gates (one 2×2 matrix per
qubit, Kronecker-combined in chunks of a few qubits and applied as small matmuls); a *diagonal*
block holds diagonal and permutation gates (CX, P, RZ, RZZ, ...), folded into one phase vector
(a polynomial of the parameters) and one index permutation. Gates commute past blocks that do
not touch their qubits, so a ZZ feature map becomes two blocks per repetition. Gradients come
from autograd; the result is exact to rounding.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import Tensor, nn

from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.dense import dense_circuit
from qsight.quantum.expressions import Poly, PolyMap
from qsight.quantum.gates import ROT_FACTOR, SUPPORTED, Gate, circuit_gates, diag_parts, rotation_coeffs, schedule

__all__ = ["SUPPORTED", "TorchCircuit", "TorchExactSampler"]

CHUNK = 4  # qubits per Kronecker-combined layer matrix (16×16)


class LayerBlock(nn.Module):
    """One-qubit gates on distinct qubits, applied as Kronecker chunks of ≤ CHUNK qubits.

    Each qubit's matrix is the product of its gates (sub-layer by sub-layer); a parametrised
    gate is C0 + cos(f·θ)·Ccos + sin(f·θ)·Csin, so a sub-layer costs a handful of tensor ops
    whatever the number of qubits. Constant sub-layers (and constant layers) are folded.
    """

    coeffs: Tensor

    def __init__(self, gates: list[Gate], n: int, n_params: int, n_inputs: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.n = n
        cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
        per_qubit: list[list[Gate]] = [[] for _ in range(n)]
        for g in gates:
            per_qubit[g.qubits[0]].append(g)
        self.polys = nn.ModuleList()
        coeffs = []
        for s in range(max(len(gs) for gs in per_qubit)):
            c, polys = _sublayer(per_qubit, s, n)
            self.polys.append(PolyMap(polys, n_params, n_inputs).to(dtype) if polys else nn.Identity())
            coeffs.append(torch.from_numpy(c).to(cdt))
        self.register_buffer("coeffs", torch.stack(coeffs), persistent=False)  # (S, 3, n, 2, 2)
        self.chunks = [(lo, min(lo + CHUNK, n)) for lo in range(0, n, CHUNK)]
        for i, (lo, hi) in enumerate(self.chunks):
            self.register_buffer(f"kidx_{i}", _kron_index(lo, hi), persistent=False)
        self.folded = all(isinstance(p, nn.Identity) for p in self.polys)
        if self.folded:
            zero = torch.zeros(1, n_params, dtype=dtype)
            for i, k in enumerate(self._krons(self._matrices(zero, zero))):
                self.register_buffer(f"const_{i}", k, persistent=False)

    def _matrices(self, p_full: Tensor, p_w: Tensor) -> Tensor:
        """Per-qubit 2×2 matrices (lead, n, 2, 2), the product of the sub-layers."""
        m: Tensor | None = None
        for s, poly in enumerate(self.polys):
            c = self.coeffs[s]
            if isinstance(poly, nn.Identity):
                ms = c[0][None]
            else:
                h = poly(p_full, p_w)[..., None, None]
                ms = torch.cos(h) * c[1] + torch.sin(h) * c[2] + c[0]
            m = ms if m is None else ms @ m
        assert m is not None
        return m

    def _krons(self, m: Tensor) -> list[Tensor]:
        """Kronecker product of each chunk's matrices: gather the factors, multiply them."""
        flat = m.reshape(m.shape[0], -1)
        out = []
        for i, (lo, hi) in enumerate(self.chunks):
            d = 2 ** (hi - lo)
            k = flat[:, getattr(self, f"kidx_{i}")] if hi - lo > 1 else m[:, lo]
            out.append(k.prod(dim=1).reshape(-1, d, d) if hi - lo > 1 else k)
        return out

    def forward(self, state: Tensor, p_full: Tensor, p_w: Tensor) -> Tensor:
        if self.folded:
            krons = [getattr(self, f"const_{i}") for i in range(len(self.chunks))]
        else:
            krons = self._krons(self._matrices(p_full, p_w))
        for (lo, hi), k in zip(self.chunks, krons, strict=True):
            state = _apply(k, state, 2 ** (self.n - hi), 2 ** (hi - lo), 2**lo)
        return state


def _apply(k: Tensor, state: Tensor, r: int, g: int, low: int) -> Tensor:
    """state[b, (r, g, low)] ↦ Σ_j k[b, i, j]·state[b, (r, j, low)] as one (b)mm."""
    if k.shape[0] == 1:  # shared matrix: fold batch, high and low bits into the rows of one mm
        v = state.reshape(state.shape[0], r, g, low).transpose(-1, -2)
        return (v @ k[0].transpose(0, 1)).transpose(-1, -2).reshape(state.shape[0], -1)
    b = k.shape[0]
    v = state.expand(b, -1).reshape(b, r, g, low).permute(0, 2, 1, 3).reshape(b, g, r * low)
    return (k @ v).reshape(b, g, r, low).permute(0, 2, 1, 3).reshape(b, -1)


def _sublayer(per_qubit: list[list[Gate]], s: int, n: int) -> tuple[np.ndarray, list[Poly]]:
    """Coefficients (3, n, 2, 2) of the s-th gate of every qubit, and its angle polynomials
    (an empty list when none of them is parametrised)."""
    c = np.zeros((3, n, 2, 2), dtype=complex)
    polys, any_param = [], False
    for q, gs in enumerate(per_qubit):
        g = gs[s] if s < len(gs) else None
        if g is None or g.poly is None:
            c[0, q] = np.eye(2) if g is None else g.matrix
            polys.append(Poly())
        else:
            c[:, q] = rotation_coeffs(g.name)
            polys.append(g.poly.scaled(ROT_FACTOR[g.name]))
            any_param = True
    return c, polys if any_param else []


def _kron_index(lo: int, hi: int) -> Tensor:
    """Indices into flattened (n, 2, 2) matrices giving, for each entry (i, j) of the chunk's
    Kronecker product, its factors M_q[bit(i), bit(j)] (qubit lo least significant)."""
    d = 2 ** (hi - lo)
    i, j = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
    idx = [4 * q + 2 * ((i >> (q - lo)) & 1) + ((j >> (q - lo)) & 1) for q in range(lo, hi)]
    return torch.from_numpy(np.stack(idx).reshape(hi - lo, d * d))


class DiagBlock(nn.Module):
    """Diagonal and permutation gates folded into state ↦ Π·(exp(i·phase(p)) ⊙ state)."""

    inv: Tensor

    def __init__(self, gates: list[Gate], n: int, n_params: int, n_inputs: int, dtype: torch.dtype) -> None:
        super().__init__()
        polys, patterns, inv = diag_parts(gates, n)
        self.phase = PolyMap(polys, n_params, n_inputs, patterns).to(dtype)
        self.trivial_phase = not (self.phase.has_const or self.phase.lin.any() or self.phase.qi.numel())
        self.permutes = bool(np.any(inv != np.arange(2**n)))
        self.register_buffer("inv", torch.from_numpy(inv), persistent=False)

    def forward(self, state: Tensor, p_full: Tensor, p_w: Tensor) -> Tensor:
        if not self.trivial_phase:
            state = state * torch.exp(1j * self.phase(p_full, p_w))
        return state[:, self.inv] if self.permutes else state


class TorchCircuit(nn.Module):
    """(angles (B, n_in), weights (n_w,)) → outcome probabilities (B, 2^n), differentiable."""

    e0: Tensor

    def __init__(self, hc: HeadCircuit, dtype: torch.dtype = torch.float64, dense: bool = True) -> None:
        super().__init__()
        n, n_in, n_w = hc.num_qubits, len(hc.inputs), len(hc.weights)
        self.n, self.n_inputs, self.n_weights, self.dtype = n, n_in, n_w, dtype
        gates = circuit_gates(hc)
        self.dense = dense_circuit(gates, n, n_in, n_in + n_w, dtype) if dense else None
        make = {"layer": LayerBlock, "diag": DiagBlock}
        blocks = [] if self.dense is not None else schedule(gates, n)
        self.blocks = nn.ModuleList(make[kind](gs, n, n_in + n_w, n_in, dtype) for kind, gs in blocks)
        cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
        e0 = torch.zeros(1, 2**n, dtype=cdt)
        e0[0, 0] = 1
        self.register_buffer("e0", e0, persistent=False)
        self.lock = threading.Lock()

    def forward(self, angles: Tensor, weights: Tensor) -> Tensor:
        with self.lock:
            return self._run(angles, weights)

    def _run(self, angles: Tensor, weights: Tensor) -> Tensor:
        x, w = angles.to(self.dtype), weights.to(device=angles.device, dtype=self.dtype)
        b = x.shape[0]
        if self.dense is not None:
            probs: Tensor = self.dense(x, w)
            return probs.expand(b, -1) if probs.shape[0] != b else probs
        p_full = torch.cat([x, w.expand(b, -1)], 1)
        p_w = torch.cat([w.new_zeros(1, self.n_inputs), w[None]], 1)
        state = self.e0
        for block in self.blocks:
            state = block(state, p_full, p_w)
        probs = torch.view_as_real(state).square().sum(-1)
        return probs.expand(b, -1) if probs.shape[0] != b else probs


class TorchExactSampler:
    """Sampler that compiles circuits to `TorchCircuit` modules."""

    name = "torch-exact"

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        self.dtype = dtype

    def bind(self, circuit: HeadCircuit) -> nn.Module:
        return TorchCircuit(circuit, self.dtype)

    def describe(self) -> dict[str, object]:
        return {"sampler": self.name, "device": "follows the input tensors", "dtype": str(self.dtype)}
