"""Gate-level compilation shared by the torch-exact paths: a Qiskit circuit as a list of gates,
grouped into layer blocks (one-qubit gates) and diagonal blocks (diagonal and permutation gates).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qiskit import QuantumCircuit, transpile

from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.expressions import Poly, param_index, to_poly

ROT_FACTOR = {"rx": 0.5, "ry": 0.5, "rz": 0.5, "p": 1.0}  # angle factor inside cos/sin
_DIAG_1Q = {"z": np.pi, "s": np.pi / 2, "sdg": -np.pi / 2, "t": np.pi / 4, "tdg": -np.pi / 4}
_PERM = {"x", "cx", "swap"}
_DIAG = {"p", "rz", "cz", "cp", "crz", "rzz", "id", *_DIAG_1Q}
SUPPORTED = sorted({"h", "y", "sx", "sxdg", "rx", "ry", *_PERM, *_DIAG})


def rotation_coeffs(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C0, Ccos, Csin): the gate is C0 + cos(f·θ)·Ccos + sin(f·θ)·Csin."""
    i2, z = np.eye(2, dtype=complex), np.zeros((2, 2), dtype=complex)
    if name == "ry":
        return z, i2, np.array([[0, -1], [1, 0]], dtype=complex)
    if name == "rx":
        return z, i2, np.array([[0, -1j], [-1j, 0]])
    if name == "rz":
        return z, i2, np.diag([-1j, 1j])
    return np.diag([1.0 + 0j, 0]), np.diag([0j, 1]), np.diag([0j, 1j])  # p


class Gate:
    """One instruction: name, qubit indices, angle polynomial (if any), constant matrix."""

    def __init__(self, name: str, qubits: tuple[int, ...], poly: Poly | None, matrix: Any) -> None:
        self.name, self.qubits, self.poly, self.matrix = name, qubits, poly, matrix

    @property
    def kind(self) -> str:
        """'diag' (diagonal or permutation gates) or 'layer' (other one-qubit gates)."""
        return "diag" if self.name in _DIAG or self.name in _PERM else "layer"


def circuit_gates(hc: HeadCircuit) -> list[Gate]:
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
        out.append(Gate(op.name, qubits, poly, matrix))
    return out


def schedule(gates: list[Gate], n: int) -> list[tuple[str, list[Gate]]]:
    """Group gates into layer/diag blocks.

    A gate may join any block after the last block touching its qubits (it commutes with
    everything in between): the earliest of its kind, a one-qubit diagonal or permutation gate
    preferring diagonal blocks (so rotation layers stay free of phases), else a new block.
    """
    blocks: list[tuple[str, list[Gate]]] = []
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


def pattern(g: Gate, bits: np.ndarray) -> tuple[np.ndarray, float]:
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


def permute(g: Gate, perm: np.ndarray) -> np.ndarray:
    if g.name == "x":
        return np.asarray(perm ^ (1 << g.qubits[0]))
    if g.name == "cx":
        c, t = g.qubits
        return np.asarray(perm ^ (((perm >> c) & 1) << t))
    a, b = g.qubits  # swap
    diff = ((perm >> a) & 1) ^ ((perm >> b) & 1)
    return np.asarray(perm ^ ((diff << a) | (diff << b)))


def diag_parts(gates: list[Gate], n: int) -> tuple[list[Poly], np.ndarray, np.ndarray]:
    """A diagonal block as (polys, patterns (T, 2^n), inv): state ↦ (exp(i·Σ_t poly_t·pattern_t) ⊙ state)[inv].

    The last polynomial is the constant 1, its pattern the block's constant phases."""
    perm = np.arange(2**n)
    polys, patterns, const = [], [], np.zeros(2**n)
    for g in gates:
        if g.name in _PERM:
            perm = permute(g, perm)
            continue
        bits = (perm[:, None] >> np.arange(n)) & 1
        pat, angle = pattern(g, bits)
        if g.poly is None:
            const += angle * pat
        else:
            polys.append(g.poly)
            patterns.append(pat)
    return [*polys, Poly(1.0)], np.stack([*patterns, const]), np.argsort(perm)
