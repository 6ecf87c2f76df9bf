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
from typing import Any

import numpy as np
import torch
from qiskit import QuantumCircuit, transpile
from torch import Tensor, nn

from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.expressions import Poly, PolyMap, param_index, to_poly

CHUNK = 4  # qubits per Kronecker-combined layer matrix (16×16)
_ROT = {"rx": 0.5, "ry": 0.5, "rz": 0.5, "p": 1.0}  # angle factor inside cos/sin
_DIAG_1Q = {"z": np.pi, "s": np.pi / 2, "sdg": -np.pi / 2, "t": np.pi / 4, "tdg": -np.pi / 4}
_PERM = {"x", "cx", "swap"}
_DIAG = {"p", "rz", "cz", "cp", "crz", "rzz", "id", *_DIAG_1Q}
SUPPORTED = sorted({"h", "y", "sx", "sxdg", "rx", "ry", *_PERM, *_DIAG})


def _rotation_coeffs(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C0, Ccos, Csin): the gate is C0 + cos(f·θ)·Ccos + sin(f·θ)·Csin."""
    i2, z = np.eye(2, dtype=complex), np.zeros((2, 2), dtype=complex)
    if name == "ry":
        return z, i2, np.array([[0, -1], [1, 0]], dtype=complex)
    if name == "rx":
        return z, i2, np.array([[0, -1j], [-1j, 0]])
    if name == "rz":
        return z, i2, np.diag([-1j, 1j])
    return np.diag([1.0 + 0j, 0]), np.diag([0j, 1]), np.diag([0j, 1j])  # p


class _Gate:
    """One instruction: name, qubit indices, angle polynomial (if any), constant matrix."""

    def __init__(self, name: str, qubits: tuple[int, ...], poly: Poly | None, matrix: Any) -> None:
        self.name, self.qubits, self.poly, self.matrix = name, qubits, poly, matrix

    @property
    def kind(self) -> str:
        """'diag' (diagonal or permutation gates) or 'layer' (other one-qubit gates)."""
        return "diag" if self.name in _DIAG or self.name in _PERM else "layer"


def _gates(hc: HeadCircuit) -> list[_Gate]:
    qc: QuantumCircuit = hc.circuit
    if not set(qc.count_ops()) <= set(SUPPORTED):
        qc = transpile(qc, basis_gates=SUPPORTED, optimization_level=0)
    index = param_index(hc.inputs, hc.weights)
    out = []
    for ins in qc.data:
        op = ins.operation
        if op.name in ("barrier", "id"):
            continue
        if op.name not in SUPPORTED:
            raise NotImplementedError(f"gate {op.name!r} is not supported by torch-exact")
        qubits = tuple(qc.find_bit(q).index for q in ins.qubits)
        poly = to_poly(op.params[0], index) if op.params else None
        matrix = op.to_matrix() if not op.params and len(qubits) == 1 else None
        out.append(_Gate(op.name, qubits, poly, matrix))
    return out


def schedule(gates: list[_Gate], n: int) -> list[tuple[str, list[_Gate]]]:
    """Group gates into layer/diag blocks.

    A gate may join any block after the last block touching its qubits (it commutes with
    everything in between): the earliest of its kind, a one-qubit diagonal or permutation gate
    preferring diagonal blocks (so rotation layers stay free of phases), else a new block.
    """
    blocks: list[tuple[str, list[_Gate]]] = []
    last = [-1] * n
    for g in gates:
        start = max(max(last[q] for q in g.qubits), 0)
        want = "layer" if g.kind == "layer" else "diag"
        target = next((b for b in range(start, len(blocks)) if blocks[b][0] == want), None)
        if target is None:
            blocks.append((want, []))
            target = len(blocks) - 1
        blocks[target][1].append(g)
        for q in g.qubits:
            last[q] = target
    return blocks


class LayerBlock(nn.Module):
    """One-qubit gates on distinct qubits, applied as Kronecker chunks of ≤ CHUNK qubits.

    Each qubit's matrix is the product of its gates (sub-layer by sub-layer); a parametrised
    gate is C0 + cos(f·θ)·Ccos + sin(f·θ)·Csin, so a sub-layer costs a handful of tensor ops
    whatever the number of qubits. Constant sub-layers (and constant layers) are folded.
    """

    coeffs: Tensor

    def __init__(self, gates: list[_Gate], n: int, n_params: int, n_inputs: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.n = n
        cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
        per_qubit: list[list[_Gate]] = [[] for _ in range(n)]
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


def _sublayer(per_qubit: list[list[_Gate]], s: int, n: int) -> tuple[np.ndarray, list[Poly]]:
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
            c[:, q] = _rotation_coeffs(g.name)
            polys.append(g.poly.scaled(_ROT[g.name]))
            any_param = True
    return c, polys if any_param else []


def _kron_index(lo: int, hi: int) -> Tensor:
    """Indices into flattened (n, 2, 2) matrices giving, for each entry (i, j) of the chunk's
    Kronecker product, its factors M_q[bit(i), bit(j)] (qubit lo least significant)."""
    d = 2 ** (hi - lo)
    i, j = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
    idx = [4 * q + 2 * ((i >> (q - lo)) & 1) + ((j >> (q - lo)) & 1) for q in range(lo, hi)]
    return torch.from_numpy(np.stack(idx).reshape(hi - lo, d * d))


def _pattern(g: _Gate, bits: np.ndarray) -> tuple[np.ndarray, float]:
    """(pattern, constant angle) of a diagonal gate: phase = angle·pattern over frame bits."""
    b = [bits[:, q].astype(np.float64) for q in g.qubits]
    if g.name in _DIAG_1Q:
        return b[0], _DIAG_1Q[g.name]
    table = {
        "p": lambda: b[0],
        "rz": lambda: b[0] - 0.5,
        "cp": lambda: b[0] * b[1],
        "cz": lambda: np.pi * b[0] * b[1],
        "crz": lambda: b[0] * (b[1] - 0.5),
        "rzz": lambda: -0.5 * (1 - 2 * b[0]) * (1 - 2 * b[1]),
    }
    return table[g.name](), 1.0


def _permute(g: _Gate, perm: np.ndarray) -> np.ndarray:
    if g.name == "x":
        return np.asarray(perm ^ (1 << g.qubits[0]))
    if g.name == "cx":
        c, t = g.qubits
        return np.asarray(perm ^ (((perm >> c) & 1) << t))
    a, b = g.qubits  # swap
    diff = ((perm >> a) & 1) ^ ((perm >> b) & 1)
    return np.asarray(perm ^ ((diff << a) | (diff << b)))


class DiagBlock(nn.Module):
    """Diagonal and permutation gates folded into state ↦ Π·(exp(i·phase(p)) ⊙ state)."""

    inv: Tensor

    def __init__(self, gates: list[_Gate], n: int, n_params: int, n_inputs: int, dtype: torch.dtype) -> None:
        super().__init__()
        perm = np.arange(2**n)
        polys, patterns, const = [], [], np.zeros(2**n)
        for g in gates:
            if g.name in _PERM:
                perm = _permute(g, perm)
                continue
            bits = (perm[:, None] >> np.arange(n)) & 1
            pat, angle = _pattern(g, bits)
            if g.poly is None:
                const += angle * pat
            else:
                polys.append(g.poly)
                patterns.append(pat)
        polys.append(Poly(1.0))
        patterns.append(const)
        self.phase = PolyMap(polys, n_params, n_inputs, np.stack(patterns)).to(dtype)
        self.trivial_phase = not (self.phase.has_const or self.phase.lin.any() or self.phase.qi.numel())
        inv = np.argsort(perm)
        self.permutes = bool(np.any(inv != np.arange(2**n)))
        self.register_buffer("inv", torch.from_numpy(inv), persistent=False)

    def forward(self, state: Tensor, p_full: Tensor, p_w: Tensor) -> Tensor:
        if not self.trivial_phase:
            state = state * torch.exp(1j * self.phase(p_full, p_w))
        return state[:, self.inv] if self.permutes else state


class TorchCircuit(nn.Module):
    """(angles (B, n_in), weights (n_w,)) → outcome probabilities (B, 2^n), differentiable."""

    e0: Tensor

    def __init__(self, hc: HeadCircuit, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        n, n_in, n_w = hc.num_qubits, len(hc.inputs), len(hc.weights)
        self.n, self.n_inputs, self.n_weights, self.dtype = n, n_in, n_w, dtype
        make = {"layer": LayerBlock, "diag": DiagBlock}
        self.blocks = nn.ModuleList(make[kind](gs, n, n_in + n_w, n_in, dtype) for kind, gs in schedule(_gates(hc), n))
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
