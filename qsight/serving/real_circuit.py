"""The quantum head's circuit as a statevector in real arithmetic, for export (ONNX has no complex type).

The same gates as `torch-exact` (`gates.circuit_gates`, grouped by `gates.schedule`), applied to
the real and imaginary parts of the state as two real tensors: a diagonal block multiplies by
cos φ + i·sin φ of its phase polynomials and permutes the basis, a layer block applies one 2×2
matrix per qubit (the product of that qubit's one-qubit gates, built per sample from the cos and
sin of its angles). Only real elementwise ops, matmuls, gathers and reshapes: torch.export and
ONNX take it as it is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.expressions import PolyMap
from qsight.quantum.gates import ROT_FACTOR, Gate, circuit_gates, diag_parts, rotation_coeffs, schedule

Pair = tuple[Tensor, Tensor]  # (real, imaginary)


class RealDiag(nn.Module):
    """state ↦ (exp(i·phase(p)) ⊙ state)[inv], the phase a sum of polynomials times basis patterns."""

    inv: Tensor

    def __init__(self, gates: list[Gate], n: int, n_params: int, n_inputs: int, dtype: torch.dtype) -> None:
        super().__init__()
        polys, patterns, inv = diag_parts(gates, n)
        self.phase = PolyMap(polys, n_params, n_inputs, patterns).to(dtype)
        self.permutes = bool(np.any(inv != np.arange(2**n)))
        self.register_buffer("inv", torch.from_numpy(inv), persistent=False)

    def forward(self, state: Pair, p_full: Tensor, p_w: Tensor) -> Pair:
        re, im = state
        phi = self.phase(p_full, p_w)
        c, s = torch.cos(phi), torch.sin(phi)
        re, im = re * c - im * s, re * s + im * c
        if self.permutes:
            re, im = re[:, self.inv], im[:, self.inv]
        return re, im


class RealLayer(nn.Module):
    """One-qubit gates on distinct qubits: per qubit, the product of its gates as one 2×2 matrix."""

    const_re: Tensor
    const_im: Tensor
    rot_re: Tensor
    rot_im: Tensor

    def __init__(self, gates: list[Gate], n: int, n_params: int, n_inputs: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.n = n
        per_qubit: dict[int, list[Gate]] = {}
        for g in gates:
            per_qubit.setdefault(g.qubits[0], []).append(g)
        self.qubits = sorted(per_qubit)
        angled = [g for q in self.qubits for g in per_qubit[q] if g.poly is not None]
        self.angles = PolyMap([g.poly.scaled(ROT_FACTOR[g.name]) for g in angled if g.poly is not None],
                              n_params, n_inputs).to(dtype) if angled else None
        self.plan: list[list[tuple[str, int]]] = []  # per qubit: ("const", k) or ("rot", k) in gate order
        consts: list[np.ndarray] = []
        rots: list[np.ndarray] = []
        for q in self.qubits:
            steps = []
            for g in per_qubit[q]:
                if g.poly is None:
                    steps.append(("const", len(consts)))
                    consts.append(np.asarray(g.matrix, dtype=complex))
                else:
                    steps.append(("rot", len(rots)))
                    rots.append(np.stack(rotation_coeffs(g.name)))  # (3, 2, 2): C0, Ccos, Csin
            self.plan.append(steps)
        self._register("const", consts, (0, 2, 2), dtype)
        self._register("rot", rots, (0, 3, 2, 2), dtype)

    def _register(self, name: str, mats: list[np.ndarray], empty: tuple[int, ...], dtype: torch.dtype) -> None:
        arr = np.stack(mats) if mats else np.zeros(empty, dtype=complex)
        self.register_buffer(f"{name}_re", torch.from_numpy(arr.real.copy()).to(dtype), persistent=False)
        self.register_buffer(f"{name}_im", torch.from_numpy(arr.imag.copy()).to(dtype), persistent=False)

    def _matrix(self, steps: list[tuple[str, int]], cos: Tensor | None, sin: Tensor | None) -> Pair:
        """The qubit's 2×2 matrix (lead, 2, 2) as a real pair, lead 1 or the batch."""
        m: Pair | None = None
        for kind, k in steps:
            if kind == "const":
                g: Pair = (self.const_re[k][None], self.const_im[k][None])
            else:
                assert cos is not None and sin is not None
                c, s = cos[:, k, None, None], sin[:, k, None, None]
                r_re, r_im = self.rot_re[k], self.rot_im[k]
                g = (r_re[0] + c * r_re[1] + s * r_re[2], r_im[0] + c * r_im[1] + s * r_im[2])
            m = g if m is None else _matmul(g, m)
        assert m is not None
        return m

    def forward(self, state: Pair, p_full: Tensor, p_w: Tensor) -> Pair:
        cos = sin = None
        if self.angles is not None:
            a = self.angles(p_full, p_w)
            cos, sin = torch.cos(a), torch.sin(a)
        for q, steps in zip(self.qubits, self.plan, strict=True):
            state = _apply_1q(self._matrix(steps, cos, sin), state, q, self.n)
        return state


def _matmul(a: Pair, b: Pair) -> Pair:
    """Complex (lead, 2, 2) product a·b in real arithmetic."""
    return a[0] @ b[0] - a[1] @ b[1], a[0] @ b[1] + a[1] @ b[0]


def _apply_1q(m: Pair, state: Pair, q: int, n: int) -> Pair:
    """A 2×2 matrix (lead, 2, 2) on qubit q (bit q of the basis index) of states (B or 1, 2^n)."""
    high, low = 2 ** (n - q - 1), 2**q
    mr, mi = (t.reshape(-1, 2, 2, 1, 1) for t in m)
    re = state[0].reshape(-1, high, 2, low).transpose(1, 2)[:, None]  # (B, 1, 2, high, low)
    im = state[1].reshape(-1, high, 2, low).transpose(1, 2)[:, None]
    out_re = (mr * re - mi * im).sum(2)  # (B, 2, high, low): Σ_j m[i, j]·state[j]
    out_im = (mr * im + mi * re).sum(2)
    return out_re.transpose(1, 2).reshape(out_re.shape[0], -1), out_im.transpose(1, 2).reshape(out_im.shape[0], -1)


class RealCircuit(nn.Module):
    """(angles (B, n_in), weights (n_w,)) → outcome probabilities (B, 2^n); agrees with torch-exact."""

    e0: Tensor

    def __init__(self, hc: HeadCircuit, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        n, n_in, n_w = hc.num_qubits, len(hc.inputs), len(hc.weights)
        self.n, self.n_inputs, self.dtype = n, n_in, dtype
        make = {"layer": RealLayer, "diag": RealDiag}
        self.blocks = nn.ModuleList(make[kind](gs, n, n_in + n_w, n_in, dtype)
                                    for kind, gs in schedule(circuit_gates(hc), n))
        e0 = torch.zeros(1, 2**n, dtype=dtype)
        e0[0, 0] = 1
        self.register_buffer("e0", e0, persistent=False)

    def forward(self, angles: Tensor, weights: Tensor) -> Tensor:
        x, w = angles.to(self.dtype), weights.to(device=angles.device, dtype=self.dtype)
        p_full = torch.cat([x, w[None].expand(x.shape[0], -1)], 1)
        p_w = torch.cat([w.new_zeros(1, self.n_inputs), w[None]], 1)
        state: Pair = (self.e0, torch.zeros_like(self.e0))
        for block in self.blocks:
            state = block(state, p_full, p_w)
        probs = state[0].square() + state[1].square()
        return probs.expand(x.shape[0], -1) if probs.shape[0] != x.shape[0] else probs
