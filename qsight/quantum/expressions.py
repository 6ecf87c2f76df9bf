"""Gate-angle expressions (polynomials of degree ≤ 2 in the circuit's parameters) in torch.

Qiskit gate angles are ``ParameterExpression``s such as ``2·(π - x0)·(π - x1)``. They are
expanded once, at compile time, into constant, linear and pairwise-product coefficients, so a
whole set of angles (or a whole diagonal phase vector) is evaluated with one or two matmuls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from qiskit.circuit import Parameter, ParameterExpression
from torch import Tensor, nn


@dataclass
class Poly:
    """c + Σ a_i p_i + Σ b_ij p_i p_j over the combined parameter vector p."""

    const: float = 0.0
    linear: dict[int, float] = field(default_factory=dict)
    quad: dict[tuple[int, int], float] = field(default_factory=dict)

    def scaled(self, s: float) -> Poly:
        return Poly(
            self.const * s, {k: v * s for k, v in self.linear.items()}, {k: v * s for k, v in self.quad.items()}
        )


def to_poly(value: object, index: dict[str, int]) -> Poly:
    """Expand a gate parameter (number or expression) over the parameters named in `index`."""
    if not isinstance(value, ParameterExpression):
        return Poly(float(value))  # type: ignore[arg-type]
    if not value.parameters:
        return Poly(float(value))
    import sympy  # type: ignore[import-untyped]

    expr = sympy.expand(value.sympify())
    syms = sorted(expr.free_symbols, key=lambda s: index[s.name])
    poly = sympy.Poly(expr, *syms)
    if poly.total_degree() > 2:
        raise NotImplementedError(f"gate angle {value} has degree > 2 in its parameters")
    out = Poly()
    for powers, coeff in poly.terms():
        used = [index[s.name] for s, k in zip(syms, powers, strict=True) for _ in range(k)]
        c = float(coeff)
        if not used:
            out.const += c
        elif len(used) == 1:
            out.linear[used[0]] = out.linear.get(used[0], 0.0) + c
        else:
            key = (min(used), max(used))
            out.quad[key] = out.quad.get(key, 0.0) + c
    return out


def param_index(inputs: Sequence[Parameter], weights: Sequence[Parameter]) -> dict[str, int]:
    """Column of each parameter in p = [inputs..., weights...]."""
    return {p.name: i for i, p in enumerate([*inputs, *weights])}


class PolyMap(nn.Module):
    """Evaluates T polynomials, each followed by a fixed pattern: (lead, P) → (lead, D).

    With ``patterns`` of shape (T, D) the result is Σ_t poly_t(p)·patterns[t] (a phase vector);
    without, D = T and the result is the polynomial values themselves.
    """

    const: Tensor
    lin: Tensor
    quad: Tensor
    qi: Tensor
    qj: Tensor

    def __init__(self, polys: Sequence[Poly], n_params: int, n_inputs: int, patterns: np.ndarray | None = None) -> None:
        super().__init__()
        t = len(polys)
        pat = np.eye(t) if patterns is None else np.asarray(patterns, dtype=np.float64)
        lin = np.zeros((n_params, t))
        pairs = sorted({k for p in polys for k in p.quad})
        quad = np.zeros((len(pairs), t))
        const = np.array([p.const for p in polys])
        for j, p in enumerate(polys):
            for i, v in p.linear.items():
                lin[i, j] += v
            for k, v in p.quad.items():
                quad[pairs.index(k), j] += v
        used = {i for p in polys for i in p.linear} | {i for k in pairs for i in k}
        self.uses_inputs = any(i < n_inputs for i in used)
        self.has_const = bool(np.any(const != 0.0))
        self.register_buffer("const", torch.from_numpy(const @ pat), persistent=False)
        self.register_buffer("lin", torch.from_numpy(lin @ pat), persistent=False)
        self.register_buffer("quad", torch.from_numpy(quad @ pat), persistent=False)
        self.register_buffer("qi", torch.tensor([k[0] for k in pairs], dtype=torch.long), persistent=False)
        self.register_buffer("qj", torch.tensor([k[1] for k in pairs], dtype=torch.long), persistent=False)

    def forward(self, p_full: Tensor, p_weights: Tensor) -> Tensor:
        p = p_full if self.uses_inputs else p_weights
        out = p @ self.lin
        if self.qi.numel():
            out = out + (p[:, self.qi] * p[:, self.qj]) @ self.quad
        if self.has_const:
            out = out + self.const
        return out


def poly_arrays(polys: Sequence[Poly], n_params: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients of T polynomials: constant (T,), linear (P, T) and quadratic (P, P, T)."""
    t = len(polys)
    const, lin, quad = np.zeros(t), np.zeros((n_params, t)), np.zeros((n_params, n_params, t))
    for j, p in enumerate(polys):
        const[j] = p.const
        for i, v in p.linear.items():
            lin[i, j] += v
        for (a, b), v in p.quad.items():
            quad[a, b, j] += v
    return const, lin, quad


def _squares(const: np.ndarray, lin: np.ndarray, quad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M (P, R), d (R,), Q (R, C)) with poly values = (p·M + d)² · Q for the arrays of `poly_arrays`."""
    p = lin.shape[0]
    eye = np.eye(p)
    rows: list[tuple[np.ndarray, float, np.ndarray]] = [(np.zeros(p), 1.0, const)]
    for i in range(p):
        if lin[i].any():
            rows += [(eye[i], 1.0, lin[i] / 4), (eye[i], -1.0, -lin[i] / 4)]
        if quad[i, i].any():
            rows.append((eye[i], 0.0, quad[i, i]))
        for j in range(i + 1, p):
            q = quad[i, j] + quad[j, i]
            if q.any():
                rows += [(eye[i] + eye[j], 0.0, q / 4), (eye[i] - eye[j], 0.0, -q / 4)]
    return np.stack([r[0] for r in rows], 1), np.array([r[1] for r in rows]), np.stack([r[2] for r in rows])


class QuadForm(nn.Module):
    """Quadratic polynomials given as arrays (see `poly_arrays`): (lead, P) → (lead, C) in 1–3 ops.

    Linear ones are one addmm. Otherwise every term is written as a weighted square of an affine
    function (p_i·p_j = ((p_i + p_j)² - (p_i - p_j)²)/4, p_i = ((p_i + 1)² - (p_i - 1)²)/4, 1 = 1²),
    so the values are (p·M + d)² · Q: addmm, square, mm.
    """

    shift: Tensor
    mix: Tensor
    out: Tensor

    def __init__(self, const: np.ndarray, lin: np.ndarray, quad: np.ndarray) -> None:
        super().__init__()
        self.linear = not quad.any()
        mix, shift, out = (lin, const, np.eye(len(const))) if self.linear else _squares(const, lin, quad)
        self.register_buffer("mix", torch.from_numpy(np.ascontiguousarray(mix)), persistent=False)
        self.register_buffer("shift", torch.from_numpy(np.ascontiguousarray(shift)), persistent=False)
        self.register_buffer("out", torch.from_numpy(np.ascontiguousarray(out)), persistent=False)

    def forward(self, p: Tensor) -> Tensor:
        z = torch.addmm(self.shift, p, self.mix)
        return z if self.linear else z.square() @ self.out
