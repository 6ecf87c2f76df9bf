"""The `torch-exact` sampler: the head's Qiskit circuit compiled to a batched torch statevector.

The circuit is cut into blocks (see `gates.schedule`). A *layer* block holds one-qubit gates,
applied as Kronecker chunks of a few qubits, each chunk's matrix a Fourier expansion over its
gate angles; a *diagonal* block holds diagonal and permutation gates (CX, P, RZ, RZZ, ...),
folded into one phase vector (a polynomial of the parameters) and one index permutation. Gates
commute past blocks that do not touch their qubits, so a ZZ feature map becomes two blocks per
repetition. Up to `dense.MAX_QUBITS` qubits the blocks become dense 2^n×2^n terms instead (far
fewer tensor ops). Gradients come from autograd; the result is exact to rounding.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import Tensor, nn

from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.dense import complex_dtype, dense_circuit, exp_i, layer_term, sin_inputs
from qsight.quantum.expressions import PolyMap, QuadForm
from qsight.quantum.gates import SUPPORTED, Gate, circuit_gates, diag_parts, schedule

__all__ = ["SUPPORTED", "TorchCircuit", "TorchExactSampler"]

CHUNK = 4  # most qubits per Kronecker-combined layer matrix (16×16)
CHUNK_FOURIER = 64  # most Fourier terms per chunk (a chunk shrinks when its qubits carry several rotations)
QUBIT_ROTATIONS = 3  # most rotations per qubit in one layer block (more are split into successive blocks)


class LayerBlock(nn.Module):
    """One-qubit gates on distinct qubits, applied as Kronecker chunks of ≤ CHUNK qubits.

    A chunk's matrix is its Fourier expansion over its gate angles, K = Σ_σ exp(iσ·α)·E_σ (see
    `dense.layer_term`): the angles of all chunks come from one polynomial map and one `sin`, each
    chunk's matrix from one mm. Constant chunks are precomputed.
    """

    def __init__(self, gates: list[Gate], n: int, n_params: int, n_inputs: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.n = n
        cdt = complex_dtype(dtype)
        per_qubit: list[list[Gate]] = [[] for _ in range(n)]
        for g in gates:
            per_qubit[g.qubits[0]].append(g)
        self.chunks = _chunks([sum(g.poly is not None for g in gs) for gs in per_qubit])
        terms = []
        for lo, hi in self.chunks:
            local = [Gate(g.name, (q - lo,), g.poly, g.matrix) for q in range(lo, hi) for g in per_qubit[q]]
            terms.append(layer_term(local, hi - lo, n_params))
        for i, t in enumerate(terms):
            mats = t.mats if t.angles is None else t.mats.reshape(len(t.mats), -1)  # constant (1, d, d), else (S, d²)
            self.register_buffer(f"mat_{i}", torch.from_numpy(mats).to(cdt), persistent=False)
        self.sizes = [0 if t.angles is None else len(t.mats) for t in terms]
        self.uses_inputs = any(t.uses(slice(0, n_inputs)) for t in terms)
        angles = [t.angles for t in terms if t.angles is not None]
        self.angles = QuadForm(*sin_inputs(angles, slice(None))).to(dtype) if angles else None

    def _krons(self, p_full: Tensor, p_w: Tensor) -> list[Tensor]:
        """Each chunk's matrix (lead, d, d)."""
        mats: list[Tensor] = [getattr(self, f"mat_{i}") for i in range(len(self.chunks))]
        if self.angles is None:
            return mats
        p = p_full if self.uses_inputs else p_w
        parts = iter(exp_i(self.angles, p, [s for s in self.sizes if s]))
        d = [2 ** (hi - lo) for lo, hi in self.chunks]
        return [(next(parts) @ m).view(-1, k, k) if s else m for m, s, k in zip(mats, self.sizes, d, strict=True)]

    def forward(self, state: Tensor, p_full: Tensor, p_w: Tensor) -> Tensor:
        for (lo, hi), k in zip(self.chunks, self._krons(p_full, p_w), strict=True):
            state = _apply(k, state, 2 ** (self.n - hi), 2 ** (hi - lo), 2**lo)
        return state


def _split_layers(blocks: list[tuple[str, list[Gate]]]) -> list[tuple[str, list[Gate]]]:
    """Split layer blocks so that no qubit has more than QUBIT_ROTATIONS rotations in one (gates on
    different qubits commute, so a layer is the product of its qubits' successive pieces)."""
    out = []
    for kind, gates in blocks:
        pieces: list[list[Gate]] = [[]]
        count: dict[int, int] = {}
        for g in gates if kind == "layer" else []:
            q = g.qubits[0]
            count[q] = count.get(q, 0) + (g.poly is not None)
            piece = max(count[q] - 1, 0) // QUBIT_ROTATIONS
            pieces += [[] for _ in range(piece + 1 - len(pieces))]
            pieces[piece].append(g)
        out += [("layer", p) for p in pieces] if kind == "layer" else [(kind, gates)]
    return out


def _chunks(n_rotations: list[int]) -> list[tuple[int, int]]:
    """Runs of ≤ CHUNK consecutive qubits with ≤ CHUNK_FOURIER Fourier terms (2^rotations) each."""
    out, lo, count = [], 0, 0
    for q, r in enumerate(n_rotations):
        if q > lo and (q - lo == CHUNK or 2 ** (count + r) > CHUNK_FOURIER):
            out.append((lo, q))
            lo, count = q, 0
        count += r
    return [*out, (lo, len(n_rotations))]


def _apply(k: Tensor, state: Tensor, r: int, g: int, low: int) -> Tensor:
    """state[b, (r, g, low)] ↦ Σ_j k[b, i, j]·state[b, (r, j, low)] as one (b)mm."""
    if k.shape[0] == 1:  # shared matrix: fold batch, high and low bits into the rows of one mm
        v = state.reshape(state.shape[0], r, g, low).transpose(-1, -2)
        return (v @ k[0].transpose(0, 1)).transpose(-1, -2).reshape(state.shape[0], -1)
    b = k.shape[0]
    v = state.expand(b, -1).reshape(b, r, g, low).permute(0, 2, 1, 3).reshape(b, g, r * low)
    return (k @ v).reshape(b, g, r, low).permute(0, 2, 1, 3).reshape(b, -1)


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
    """(angles (B, n_in), weights (n_w,)) → outcome probabilities (B, 2^n), differentiable.

    ``dense=False`` keeps small circuits on the block path (the dense path's reference in tests).
    """

    e0: Tensor

    def __init__(self, hc: HeadCircuit, dtype: torch.dtype = torch.float64, dense: bool = True) -> None:
        super().__init__()
        n, n_in, n_w = hc.num_qubits, len(hc.inputs), len(hc.weights)
        self.n, self.n_inputs, self.n_weights, self.dtype = n, n_in, n_w, dtype
        gates = circuit_gates(hc)
        self.dense = dense_circuit(gates, n, n_in, n_in + n_w, dtype) if dense else None
        make = {"layer": LayerBlock, "diag": DiagBlock}
        blocks = [] if self.dense is not None else _split_layers(schedule(gates, n))
        self.blocks = nn.ModuleList(make[kind](gs, n, n_in + n_w, n_in, dtype) for kind, gs in blocks)
        cdt = complex_dtype(dtype)
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
