"""The phases of a diagonal block at every basis state, for torch-exact's block path (`statevec`).

A diagonal block's phase is φ(b) = c(b) + Σ_m f_m·w_m(b), for features f (the monomials of the
parameters its gate angles use, per sample or shared) and fixed patterns c, w_m. In general that
is one (2^n × F) @ (F × lead) matmul (`dense_phases`). When c and every w_m are quadratic forms in
the spins z_i = 1 - 2·b_i (Walsh spectrum of degree ≤ 2, as for the ZZ and Z feature maps), so is
φ, and over the low and high halves of the bits φ(b) = Lo(b_lo) + Hi(b_hi) + z_loᵀ Γ z_hi
(`quadratic_phases`): tables of 2^(n/2) rows and one (2^(n/2) × n/2) matmul. Both write φ as
(2^n, lead) and have a hand-written gradient.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor


def walsh(a: np.ndarray) -> np.ndarray:
    """Coefficients t[S] of a = Σ_S t[S]·Π_{i∈S} z_i per column of a (2^n, F); S as a bit mask."""
    out = np.array(a, dtype=np.float64)
    h = 1
    while h < len(out):
        v = out.reshape(-1, 2, h, out.shape[1])
        v[:, 0], v[:, 1] = v[:, 0] + v[:, 1], v[:, 0] - v[:, 1]
        h *= 2
    return out / len(out)


def _spins(n: int, masks: list[int]) -> np.ndarray:
    """(2^n, len(masks)): Π_{i∈S} z_i at every basis state of n bits, for each mask S."""
    bits = np.arange(2**n)[:, None] & np.array(masks, dtype=np.int64).reshape(1, -1)
    return np.asarray(1.0 - 2.0 * (np.bitwise_count(bits) % 2), dtype=np.float64)


def quadratic_tables(patterns: np.ndarray, n: int) -> dict[str, np.ndarray] | None:
    """For patterns (2^n, F + 1) (the features' then the constant's), the arrays of `quadratic_phases`,
    or None where some pattern is not quadratic in the spins."""
    t = walsh(patterns)
    degree = np.array([bin(s).count("1") for s in range(len(t))])
    if np.abs(t[degree > 2]).max(initial=0.0) > 1e-11 * max(1.0, np.abs(patterns).max()):
        return None
    lo_n = n // 2
    lo_bits, hi_bits = range(lo_n), range(lo_n, n)
    lo = [0] + [1 << i for i in lo_bits] + [(1 << i) | (1 << j) for i, j in itertools.combinations(lo_bits, 2)]
    hi = [1 << i for i in hi_bits] + [(1 << i) | (1 << j) for i, j in itertools.combinations(hi_bits, 2)]
    cross = [(1 << i) | (1 << j) for i in lo_bits for j in hi_bits]
    return {
        "coeffs": t[lo + hi + cross].T,  # (F + 1, M): monomial coefficients of each pattern
        "e_lo": _spins(lo_n, lo),
        "e_hi": _spins(n - lo_n, [m >> lo_n for m in hi]),
        "z_lo": _spins(lo_n, [1 << i for i in lo_bits]),
        "z_hi": _spins(n - lo_n, [1 << i for i in range(n - lo_n)]),
    }


def dense_phases(f: Tensor, weight: Tensor, const: Tensor, out: Tensor) -> None:
    """out (2^n, lead) = const + weight @ fᵀ."""
    torch.addmm(const, weight, f.T, out=out)


def dense_grad(d: Tensor, weight: Tensor) -> Tensor:
    """∂L/∂f (lead, F) from ∂L/∂φ (2^n, lead)."""
    return d.T @ weight


def _coefficients(f: Tensor, coeffs: Tensor) -> Tensor:
    """(lead, M): the monomial coefficients of φ, Σ_m f_m·coeffs[m] + coeffs[-1]."""
    return torch.addmm(coeffs[-1:], f, coeffs[:-1])


def quadratic_phases(f: Tensor, tables: list[Tensor], out: Tensor) -> None:
    """out (2^n, lead) = Lo[b_lo] + Hi[b_hi] + Σ_ij z_i(b_lo)·Γ_ij·z_j(b_hi) (module docstring)."""
    coeffs, e_lo, e_hi, z_lo, z_hi = tables
    g = _coefficients(f, coeffs)
    m1, m2, lead = e_lo.shape[1], e_hi.shape[1], f.shape[0]
    cross = g[:, m1 + m2 :].reshape(lead, z_lo.shape[1], z_hi.shape[1])
    t = torch.einsum("li,bij->jlb", z_lo, cross).reshape(z_hi.shape[1], -1)
    torch.mm(z_hi, t, out=out.view(z_hi.shape[0], -1))
    o3 = out.view(z_hi.shape[0], z_lo.shape[0], lead)
    o3 += (e_lo @ g[:, :m1].T)[None]
    o3 += (e_hi @ g[:, m1 : m1 + m2].T)[:, None]


def quadratic_grad(d: Tensor, tables: list[Tensor]) -> Tensor:
    """∂L/∂f (lead, F) from ∂L/∂φ (2^n, lead)."""
    coeffs, e_lo, e_hi, z_lo, z_hi = tables
    lead = d.shape[1]
    d3 = d.view(z_hi.shape[0], z_lo.shape[0], lead)
    u = (z_hi.T @ d.view(z_hi.shape[0], -1)).view(z_hi.shape[1], z_lo.shape[0], lead)
    dg = torch.cat([(e_lo.T @ d3.sum(0)).T, (e_hi.T @ d3.sum(1)).T,
                    torch.einsum("li,jlb->bij", z_lo, u).reshape(lead, -1)], 1)
    return dg @ coeffs[:-1].T
