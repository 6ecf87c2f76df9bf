"""Dense path of torch-exact for few qubits: the circuit as a short chain of 2^n×2^n operations.

Each block of the schedule becomes a term acting on the statevector (the rows of a (B, 2^n)
tensor): a constant matrix, a diagonal phase exp(i·φ(p)), or a parametrised layer
K(p) = Σ_σ exp(i·σ·α(p))·E_σ, the Fourier expansion of the layer over its gate angles α.
Constant terms are folded into neighbouring layers and the initial state, and all phases and
Fourier angles of a call come from one polynomial map and one `sin` per parameter group
(per-sample terms and shared, weights-only terms). A circuit so costs a few dozen tensor ops on
the autograd graph: at small n PyTorch's per-op overhead, not arithmetic, sets the time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from qsight.quantum.expressions import Poly, QuadForm, poly_arrays
from qsight.quantum.gates import ROT_FACTOR, Gate, diag_parts, rotation_coeffs, schedule

MAX_QUBITS = 5  # widest circuit the dense path takes (at 6 it is no faster than the block path)
MAX_FOURIER = 256  # Fourier terms a layer may have (2^parametrised gates)

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # poly_arrays: const (K,), linear (P, K), quad (P, P, K)


@dataclass
class Term:
    """'const' (mats (1, N, N)), 'phase' (angles φ_k, one per basis state) or 'layer'
    (mats (S, N, N) = E_σ, angles σ·α, one per Fourier term); the term acts as state ↦ M·state."""

    kind: str
    mats: np.ndarray
    angles: Arrays | None = None

    def uses(self, rows: slice) -> bool:
        """Whether the angles depend on the parameters in `rows`."""
        if self.angles is None:
            return False
        _, lin, quad = self.angles
        return bool(lin[rows].any() or quad[rows].any() or quad[:, rows].any())


def _fourier_2x2(name: str) -> dict[int, np.ndarray]:
    """A rotation C0 + cos α·Cc + sin α·Cs as Σ_σ exp(iσα)·E_σ over σ ∈ {-1, 0, 1} (zero terms left out)."""
    c0, cc, cs = rotation_coeffs(name)
    parts = {0: c0, 1: (cc - 1j * cs) / 2, -1: (cc + 1j * cs) / 2}
    return {s: e for s, e in parts.items() if e.any()}


def _combine(arrays: Arrays, weights: np.ndarray) -> Arrays:
    """Linear combinations (columns of `weights`) of the polynomials in `arrays`."""
    return arrays[0] @ weights, arrays[1] @ weights, arrays[2] @ weights


def layer_term(gates: list[Gate], n: int, n_params: int) -> Term:
    """A layer block's Fourier expansion (a constant term when no gate is parametrised)."""
    per_qubit: list[list[Gate]] = [[] for _ in range(n)]
    for g in gates:
        per_qubit[g.qubits[0]].append(g)
    angle_polys: list[Poly] = []
    full: dict[tuple[int, ...], np.ndarray] = {(): np.ones((1, 1), dtype=complex)}
    for gs in per_qubit:  # qubit 0 first: it is the least significant Kronecker factor
        acc: dict[tuple[int, ...], np.ndarray] = {(): np.eye(2, dtype=complex)}
        for g in gs:
            if g.poly is None:
                acc = {k: g.matrix @ m for k, m in acc.items()}
            else:
                angle_polys.append(g.poly.scaled(ROT_FACTOR[g.name]))
                acc = {(*k, s): e @ m for k, m in acc.items() for s, e in _fourier_2x2(g.name).items()}
        full = {k + kq: np.kron(e, m) for k, m in full.items() for kq, e in acc.items()}
    if not angle_polys:
        return Term("const", full[()][None])
    sigmas = list(full)
    angles = _combine(poly_arrays(angle_polys, n_params), np.array(sigmas, dtype=np.float64).T)
    return Term("layer", np.stack([full[s] for s in sigmas]), angles)


def _diag_terms(gates: list[Gate], n: int, n_params: int) -> list[Term]:
    """A diagonal block: a phase term (if parametrised) and a constant term (constant phases, permutation)."""
    polys, patterns, inv = diag_parts(gates, n)
    perm = np.eye(2**n, dtype=complex)[inv]  # (P·v)[j] = v[inv[j]]
    if len(polys) == 1:  # only the constant polynomial
        return [Term("const", (perm * np.exp(1j * patterns[-1]))[None])]
    terms = [Term("phase", np.zeros((0, 0, 0)), _combine(poly_arrays(polys, n_params), patterns))]
    return terms + ([Term("const", perm[None])] if np.any(inv != np.arange(2**n)) else [])


def _fold(terms: list[Term], n: int) -> tuple[np.ndarray, list[Term]]:
    """Fold constant terms into the initial state and neighbouring layers: (initial state, terms)."""
    v0 = np.zeros(2**n, dtype=complex)
    v0[0] = 1
    while terms and terms[0].kind == "const":
        v0, terms = terms[0].mats[0] @ v0, terms[1:]
    out: list[Term] = []
    for t in terms:
        prev = out[-1] if out else None
        if t.kind == "const" and prev is not None and prev.kind != "phase":
            prev.mats = t.mats[0] @ prev.mats
        elif t.kind == "layer" and prev is not None and prev.kind == "const":
            t.mats = t.mats @ prev.mats[0]
            out[-1] = t
        else:
            out.append(t)
    return v0, out


def sin_inputs(angles: list[Arrays], rows: slice) -> Arrays:
    """Columns (a + π/2, a) for every angle a, so that sin gives (cos a, sin a) pairs."""
    const = np.concatenate([a[0] for a in angles])
    lin = np.concatenate([a[1][rows] for a in angles], 1)
    quad = np.concatenate([a[2][rows][:, rows] for a in angles], 2)
    shifted = np.stack([const + np.pi / 2, const], 1).reshape(-1)
    return shifted, np.repeat(lin, 2, axis=1), np.repeat(quad, 2, axis=2)


def exp_i(angles: nn.Module, p: Tensor, sizes: list[int]) -> list[Tensor]:
    """exp(i·a) for the angle sets of `sizes`, from a map producing `sin_inputs` columns (a + π/2, a)."""
    e = torch.view_as_complex(torch.sin(angles(p)).view(p.shape[0], -1, 2))
    return list(e.split_with_sizes(sizes, 1)) if len(sizes) > 1 else [e]


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype of a real one (float64 → complex128, else complex64)."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _find_or_add(items: list[Arrays], arrays: Arrays) -> int:
    """Index of `arrays` in `items`, appended when new (repeated feature maps share their phases)."""
    for i, a in enumerate(items):
        if all(u.shape == v.shape and np.array_equal(u, v) for u, v in zip(a, arrays, strict=True)):
            return i
    items.append(arrays)
    return len(items) - 1


class DenseCircuit(nn.Module):
    """(inputs (B, n_in), weights (n_w,)) → probabilities (B or 1, 2^n) of a compiled term chain."""

    v0: Tensor

    def __init__(self, terms: list[Term], v0: np.ndarray, n_inputs: int, dtype: torch.dtype) -> None:
        super().__init__()
        cdt = complex_dtype(dtype)
        self.n_inputs, self.steps = n_inputs, [t.kind for t in terms]
        inputs = slice(0, n_inputs)
        self.group = [int(t.angles is not None and not t.uses(inputs)) if t.kind != "const" else -1 for t in terms]
        batch_rows = slice(None) if any(t.uses(slice(n_inputs, None)) for t in terms) else inputs
        self.batch_uses_weights = batch_rows == slice(None)
        self.maps = nn.ModuleList()
        self.sizes: list[list[int]] = []
        self.chunk = [-1] * len(terms)  # index of each term's angles among its group's distinct angle sets
        for grp, rows in ((0, batch_rows), (1, slice(n_inputs, None))):
            distinct: list[Arrays] = []
            for i, t in enumerate(terms):
                if self.group[i] == grp and t.angles is not None:
                    self.chunk[i] = _find_or_add(distinct, t.angles)
            self.sizes.append([len(a[0]) for a in distinct])
            self.maps.append(QuadForm(*sin_inputs(distinct, rows)).to(dtype) if distinct else nn.Identity())
        if len(terms) > 1 and terms[0].kind == "phase" and terms[1].kind != "phase":  # start from the phase itself
            terms[1].mats = terms[1].mats * v0
            v0 = np.ones_like(v0)
        self.scale_first = bool(np.any(v0 != 1))
        self.register_buffer("v0", torch.from_numpy(v0).to(cdt)[None], persistent=False)
        for i, t in enumerate(terms):
            if t.kind == "phase":
                mat = torch.zeros(0)
            elif t.kind == "layer" and i == 0:  # the layer acts on the constant initial state
                mat = torch.from_numpy(t.mats @ v0)
            else:  # transposed: the state is a row vector, state ↦ state @ Mᵀ
                mat = torch.from_numpy(np.swapaxes(t.mats, 1, 2).reshape(len(t.mats), -1))
            self.register_buffer(f"mat_{i}", mat.to(cdt).contiguous(), persistent=False)

    def _features(self, x: Tensor, w: Tensor) -> list[list[Tensor]]:
        """Per group, the exp(i·angle) tensors of its distinct angle sets."""
        out: list[list[Tensor]] = []
        for grp, qf in enumerate(self.maps):
            if isinstance(qf, nn.Identity):
                out.append([])
                continue
            p = w[None] if grp == 1 else torch.cat([x, w.expand(x.shape[0], -1)], 1) if self.batch_uses_weights else x
            out.append(exp_i(qf, p, self.sizes[grp]))
        return out

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        feats = self._features(x, w)
        state: Tensor | None = None
        for i, (kind, grp) in enumerate(zip(self.steps, self.group, strict=True)):
            mat: Tensor = getattr(self, f"mat_{i}")
            if kind == "const":
                assert state is not None
                state = state @ mat.view(state.shape[1], -1)
                continue
            e = feats[grp][self.chunk[i]]
            if kind == "phase":
                state = (e * self.v0 if self.scale_first else e) if state is None else state * e
            elif state is None:
                state = e @ mat
            else:
                state = _apply_layer(state, e, mat)
        if state is None:
            state = self.v0
        return torch.view_as_real(state).square().sum(-1)


def _apply_layer(state: Tensor, e: Tensor, mat: Tensor) -> Tensor:
    """state ↦ K·state with Kᵀ = Σ_σ e_σ·E_σᵀ (one Kᵀ shared by all rows, or one per row)."""
    d = state.shape[1]
    if e.shape[0] == 1:
        return state @ (e @ mat).view(d, d)
    return (state.unsqueeze(1) @ (e @ mat).view(-1, d, d)).squeeze(1)


def dense_circuit(gates: list[Gate], n: int, n_inputs: int, n_params: int, dtype: torch.dtype) -> DenseCircuit | None:
    """The dense module of a circuit, or None where it is too wide for the dense path."""
    if n > MAX_QUBITS:
        return None
    blocks = schedule(gates, n)
    if any(kind == "layer" and 2 ** sum(g.poly is not None for g in gs) > MAX_FOURIER for kind, gs in blocks):
        return None
    terms: list[Term] = []
    for kind, gs in blocks:
        terms += [layer_term(gs, n, n_params)] if kind == "layer" else _diag_terms(gs, n, n_params)
    v0, terms = _fold(terms, n)
    return DenseCircuit(terms, v0, n_inputs, dtype)
