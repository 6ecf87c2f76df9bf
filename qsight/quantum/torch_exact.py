"""The `torch-exact` sampler: the head's Qiskit circuit compiled to a batched torch statevector.

The circuit is cut into blocks (see `gates.schedule`). A *layer* block holds one-qubit gates,
applied as Kronecker chunks of a few qubits, each chunk's matrix a Fourier expansion over its
gate angles; a *diagonal* block holds diagonal and permutation gates (CX, P, RZ, RZZ, ...),
folded into one phase vector (a polynomial of the parameters) and one index permutation. Gates
commute past blocks that do not touch their qubits, so a ZZ feature map becomes two blocks per
repetition. Up to `dense.MAX_QUBITS` qubits the blocks become dense 2^n×2^n terms, with gradients
from autograd (few, small ops). Wider circuits run as ops of `statevec` (the batch as one real
tensor, chunk matmuls, a hand-written backward pass, reused memory); the modules here compute the
ops' tensors (chunk matrices, phase features) from the parameters, differentiably. Both are exact
to rounding.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import Tensor, nn

from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.dense import dense_circuit, layer_term, sin_inputs
from qsight.quantum.expressions import Poly, QuadForm, poly_arrays
from qsight.quantum.gates import SUPPORTED, Gate, circuit_gates, diag_parts, schedule
from qsight.quantum.phases import quadratic_tables
from qsight.quantum.statevec import Chunk, Expand, Layer, Op, Perm, Phase, Program, evolve, final_state
from qsight.quantum.workspace import Workspace

__all__ = ["SUPPORTED", "TorchCircuit", "TorchExactSampler"]

CHUNK = 4  # most qubits per Kronecker-combined layer matrix (16×16)
CHUNK_FOURIER = 64  # most Fourier terms per chunk (a chunk shrinks when its qubits carry several rotations)
QUBIT_ROTATIONS = 3  # most rotations per qubit in one layer block (more are split into successive blocks)


class LayerBlock(nn.Module):
    """One-qubit gates on distinct qubits, as Kronecker chunks of ≤ CHUNK qubits.

    A chunk's matrix is its Fourier expansion over its gate angles, K = Σ_σ exp(iσ·α)·E_σ (see
    `dense.layer_term`), taken apart into real arrays: with (cos σ·α, sin σ·α) from one polynomial map
    and one `sin` for all chunks, Re K (and Im K, unless every gate is real) is one real mm. Constant
    chunks are precomputed. `matrices` gives (lead, d, d) real or (lead, 2, d, d) (real, imaginary).
    """

    def __init__(self, gates: list[Gate], n: int, n_params: int, n_inputs: int, dtype: torch.dtype) -> None:
        super().__init__()
        per_qubit: list[list[Gate]] = [[] for _ in range(n)]
        for g in gates:
            per_qubit[g.qubits[0]].append(g)
        self.chunks = _chunks([sum(g.poly is not None for g in gs) for gs in per_qubit])
        self.imag = [not all(_is_real(g) for q in range(lo, hi) for g in per_qubit[q]) for lo, hi in self.chunks]
        terms = []
        for lo, hi in self.chunks:
            local = [Gate(g.name, (q - lo,), g.poly, g.matrix) for q in range(lo, hi) for g in per_qubit[q]]
            terms.append(layer_term(local, hi - lo, n_params))
        for i, (t, imag) in enumerate(zip(terms, self.imag, strict=True)):
            self.register_buffer(f"mat_{i}", torch.from_numpy(_real_parts(t.mats, t.angles is None, imag)).to(dtype),
                                 persistent=False)
        self.sizes = [0 if t.angles is None else 2 * len(t.mats) for t in terms]
        self.uses_inputs = any(t.uses(slice(0, n_inputs)) for t in terms)
        angles = [t.angles for t in terms if t.angles is not None]
        self.angles = QuadForm(*sin_inputs(angles, slice(None))).to(dtype) if angles else None

    def matrices(self, p_full: Tensor, p_w: Tensor) -> list[Tensor]:
        """Each chunk's matrix, (lead, d, d) or (lead, 2, d, d); lead = B when the block uses inputs."""
        mats: list[Tensor] = [getattr(self, f"mat_{i}") for i in range(len(self.chunks))]
        if self.angles is None:
            return mats
        p = p_full if self.uses_inputs else p_w
        trig = torch.sin(self.angles(p))
        parts = iter(trig.split_with_sizes([s for s in self.sizes if s], 1))
        out = []
        for m, size, (lo, hi), imag in zip(mats, self.sizes, self.chunks, self.imag, strict=True):
            d = 2 ** (hi - lo)
            k = next(parts) @ m if size else m
            out.append(k.view(-1, 2, d, d) if imag else k.view(-1, d, d))
        return out


def _is_real(g: Gate) -> bool:
    """Whether the gate's matrix is real for every angle."""
    return g.name == "ry" if g.poly is not None else not np.iscomplexobj(g.matrix) or not np.imag(g.matrix).any()


def _real_parts(mats: np.ndarray, constant: bool, imag: bool) -> np.ndarray:
    """A constant chunk (1, d, d) complex → (1, d, d) or (1, 2, d, d) real; a Fourier chunk's E_σ (S, d, d)
    → (2S, d² or 2d²): rows (cos, sin) of each σ, so that [cos σα, sin σα] @ rows = Re K (, Im K)."""
    if constant:
        return np.stack([mats.real, mats.imag], 1) if imag else np.ascontiguousarray(mats.real)
    re, im = mats.real.reshape(len(mats), -1), mats.imag.reshape(len(mats), -1)
    rows = [np.concatenate([re, im], 1), np.concatenate([-im, re], 1)] if imag else [re, -im]
    return np.stack(rows, 1).reshape(2 * len(mats), -1)


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


class PhaseMap(nn.Module):
    """A diagonal block's phases φ (2^n, lead) = Σ_t poly_t(p)·pattern_t = const + weight @ fᵀ, where the
    features f (lead, F) are the monomials (parameters, products of two) that its polynomials use; as a
    quadratic form in the spins where it is one (`phases.quadratic_tables`)."""

    def __init__(self, polys: list[Poly], patterns: np.ndarray, n_params: int, n_inputs: int) -> None:
        super().__init__()
        const, lin, quad = poly_arrays(polys, n_params)
        self.li = [i for i in range(n_params) if lin[i].any()]
        pairs = [(i, j) for i in range(n_params) for j in range(i, n_params) if quad[i, j].any()]
        self.qi, self.qj = [i for i, _ in pairs], [j for _, j in pairs]
        rows = [lin[i] for i in self.li] + [quad[i, j] for i, j in pairs]
        weight = np.stack(rows) @ patterns if rows else np.zeros((0, patterns.shape[1]))
        c = const @ patterns
        self.trivial = not rows and not np.any(c)
        self.uses_inputs = any(i < n_inputs for i in self.li + self.qi + self.qj)
        n = patterns.shape[1].bit_length() - 1
        tables = quadratic_tables(np.concatenate([weight.T, c[:, None]], 1), n) if n > 1 else None
        self.quadratic = tables is not None
        arrays = list(tables.values()) if tables is not None else [np.ascontiguousarray(weight.T), c[:, None]]
        self.names = [f"param_{i}" for i in range(len(arrays))]
        for name, a in zip(self.names, arrays, strict=True):
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(a)), persistent=False)

    def params(self) -> list[Tensor]:
        """The fixed tensors of `statevec.Phase`."""
        return [getattr(self, name) for name in self.names]

    def forward(self, p_full: Tensor, p_w: Tensor) -> Tensor:
        """The features f (lead, F)."""
        p = p_full if self.uses_inputs else p_w
        return torch.cat([p[:, self.li], p[:, self.qi] * p[:, self.qj]], 1)

    def same(self, other: PhaseMap) -> bool:
        """Whether both compute the same phases."""
        mine, theirs = self.params(), other.params()
        return (self.li, self.qi, self.qj) == (other.li, other.qi, other.qj) and len(mine) == len(theirs) and all(
            torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))


class DiagBlock(nn.Module):
    """Diagonal and permutation gates folded into state ↦ Π·(exp(i·φ(p)) ⊙ state)."""

    inv: Tensor
    perm: Tensor
    phase: PhaseMap | None

    def __init__(self, gates: list[Gate], n: int, n_params: int, n_inputs: int, dtype: torch.dtype) -> None:
        super().__init__()
        polys, patterns, inv = diag_parts(gates, n)
        phase = PhaseMap(polys, patterns, n_params, n_inputs).to(dtype)
        self.phase = None if phase.trivial else phase
        self.permutes = bool(np.any(inv != np.arange(2**n)))
        self.register_buffer("inv", torch.from_numpy(inv), persistent=False)
        self.register_buffer("perm", torch.from_numpy(np.argsort(inv)), persistent=False)


Block = LayerBlock | DiagBlock


def _share_phases(blocks: list[Block]) -> None:
    """Diagonal blocks with the same phases (a repeated feature map) share one PhaseMap."""
    seen: list[PhaseMap] = []
    for b in blocks:
        if isinstance(b, DiagBlock) and b.phase is not None:
            b.phase = next((s for s in seen if s.same(b.phase)), b.phase)
            seen += [] if any(s is b.phase for s in seen) else [b.phase]


def _constant(b: Block) -> bool:
    return b.angles is None if isinstance(b, LayerBlock) else b.phase is None or not (b.phase.li or b.phase.qi)


def _program(blocks: list[Block], n: int, start: bool) -> Program:
    """The ops of the blocks, tensor indices in the order of `_tensors` (after the start state, if any);
    Expand before the first per-sample op."""
    ops: list[Op] = []
    index: dict[int, int] = {}
    count, expanded = int(start), False
    for b in blocks:
        per_sample = b.uses_inputs if isinstance(b, LayerBlock) else b.phase is not None and b.phase.uses_inputs
        if per_sample and not expanded:
            ops.append(Expand())
            expanded = True
        if isinstance(b, LayerBlock):
            chunks = [Chunk(count + i, lo, hi, imag) for i, ((lo, hi), imag) in enumerate(zip(b.chunks, b.imag,
                                                                                                strict=True))]
            ops.append(Layer(tuple(chunks)))
            count += len(chunks)
            continue
        if b.phase is not None:
            if id(b.phase) not in index:
                index[id(b.phase)] = count
                count += 1 + len(b.phase.names)
            k = index[id(b.phase)]
            ops.append(Phase(k, tuple(range(k + 1, k + 1 + len(b.phase.names))), b.phase.quadratic))
        if b.permutes:
            ops.append(Perm(count, count + 1))
            count += 2
    return Program(n, ops, 0 if start else None, Workspace())


def _tensors(blocks: list[Block], p_full: Tensor, p_w: Tensor) -> list[Tensor]:
    """The op tensors of `_program`'s ops: chunk matrices, (distinct) phases, permutation indices."""
    out: list[Tensor] = []
    done: set[int] = set()
    for b in blocks:
        if isinstance(b, LayerBlock):
            out += b.matrices(p_full, p_w)
            continue
        if b.phase is not None and id(b.phase) not in done:
            done.add(id(b.phase))
            out += [b.phase(p_full, p_w), *b.phase.params()]
        if b.permutes:
            out += [b.inv, b.perm]
    return out


def _start_state(blocks: list[Block], n: int, n_params: int, dtype: torch.dtype) -> Tensor:
    """The state (2^n, 2, 1) that constant blocks make of |0…0⟩."""
    p = torch.zeros(1, n_params, dtype=dtype)
    return final_state(_program(blocks, n, False), _tensors(blocks, p, p), p)


class TorchCircuit(nn.Module):
    """(angles (B, n_in), weights (n_w,)) → outcome probabilities (B, 2^n), differentiable.

    ``dense=False`` keeps small circuits on the block path (the dense path's reference in tests).
    """

    start: Tensor | None

    def __init__(self, hc: HeadCircuit, dtype: torch.dtype = torch.float64, dense: bool = True) -> None:
        super().__init__()
        n, n_in, n_w = hc.num_qubits, len(hc.inputs), len(hc.weights)
        self.n, self.n_inputs, self.n_weights, self.dtype = n, n_in, n_w, dtype
        gates = circuit_gates(hc)
        self.dense = dense_circuit(gates, n, n_in, n_in + n_w, dtype) if dense else None
        make: dict[str, type[LayerBlock] | type[DiagBlock]] = {"layer": LayerBlock, "diag": DiagBlock}
        blocks = [] if self.dense is not None else _split_layers(schedule(gates, n))
        parts: list[Block] = [make[kind](gs, n, n_in + n_w, n_in, dtype) for kind, gs in blocks]
        _share_phases(parts)
        lead = next((i for i, b in enumerate(parts) if not _constant(b)), len(parts))
        self.register_buffer("start", _start_state(parts[:lead], n, n_in + n_w, dtype) if lead else None,
                             persistent=False)
        self.parts = parts[lead:]
        self.blocks = nn.ModuleList(self.parts)
        self.program = _program(self.parts, n, lead > 0)
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
        start = [] if self.start is None else [self.start]
        probs = evolve(self.program, b, start + _tensors(self.parts, p_full, p_w), x.detach())
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
