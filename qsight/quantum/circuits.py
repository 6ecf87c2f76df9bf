"""The quantum head's circuit, built with Qiskit from spec parameters, and its readouts."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.circuit.library import efficient_su2, real_amplitudes, z_feature_map, zz_feature_map

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from qsight.quantum.params import Ansatz, Entanglement, FeatureMap, QuantumHeadParams, Readout


@dataclass(frozen=True)
class CircuitSpec:
    """What the circuit is made of (hashable; samplers compile one per spec)."""

    qubits: int = 4
    feature_map: FeatureMap = "zz"
    feature_map_reps: int = 2
    feature_map_entanglement: Entanglement = "full"
    ansatz: Ansatz = "real-amplitudes"
    reps: int = 2
    entanglement: Entanglement = "reverse_linear"

    @classmethod
    def from_params(cls, p: QuantumHeadParams) -> CircuitSpec:
        """The circuit part of the head's parameters."""
        return cls(
            p.qubits,
            p.feature_map,
            p.feature_map_reps,
            p.feature_map_entanglement,
            p.ansatz,
            p.reps,
            p.entanglement,
        )


@dataclass(frozen=True)
class HeadCircuit:
    """A parametrised circuit (no measurements) and its ordered input and weight parameters."""

    circuit: QuantumCircuit
    inputs: tuple[Parameter, ...]
    weights: tuple[Parameter, ...]

    @property
    def num_qubits(self) -> int:
        return len(self.circuit.qubits)


def entangler_pairs(n: int, kind: Entanglement) -> list[tuple[int, int]]:
    """Qubit pairs of one entangling layer (Qiskit's meaning of each name)."""
    if n < 2 or kind == "none":
        return []
    linear = [(i, i + 1) for i in range(n - 1)]
    if kind == "full":
        return list(itertools.combinations(range(n), 2))
    if kind == "linear":
        return linear
    if kind == "reverse_linear":
        return linear[::-1]
    if kind == "circular":
        return ([(n - 1, 0)] if n > 2 else []) + linear
    return linear[::2] + linear[1::2]  # pairwise


def _angle_feature_map(n: int, reps: int, entanglement: Entanglement) -> QuantumCircuit:
    x = ParameterVector("x", n)
    qc = QuantumCircuit(n, name="AngleFeatureMap")
    for r in range(reps):
        for q in range(n):
            qc.ry(x[q], q)
        if r < reps - 1:
            for a, b in entangler_pairs(n, entanglement):
                qc.cx(a, b)
    return qc


def feature_map_circuit(spec: CircuitSpec) -> QuantumCircuit:
    """The data-encoding circuit; its parameters are named x[0..n-1]."""
    n, reps, ent = spec.qubits, spec.feature_map_reps, spec.feature_map_entanglement
    if spec.feature_map == "zz" and n > 1 and ent != "none":  # without pairs zz is z
        return zz_feature_map(n, reps=reps, entanglement=ent, parameter_prefix="x")
    if spec.feature_map in ("z", "zz"):
        return z_feature_map(n, reps=reps, parameter_prefix="x")
    return _angle_feature_map(n, reps, ent)


def ansatz_circuit(spec: CircuitSpec) -> QuantumCircuit:
    """The trainable circuit; its parameters are named θ[..]."""
    pairs = entangler_pairs(spec.qubits, spec.entanglement) if spec.entanglement == "none" else spec.entanglement
    if spec.ansatz == "real-amplitudes":
        return real_amplitudes(spec.qubits, entanglement=pairs, reps=spec.reps)
    return efficient_su2(spec.qubits, entanglement=pairs, reps=spec.reps)


def build_circuit(spec: CircuitSpec) -> HeadCircuit:
    """Feature map followed by the ansatz, parameters in a fixed order."""
    fmap, ansatz = feature_map_circuit(spec), ansatz_circuit(spec)
    qc = QuantumCircuit(spec.qubits, name="qsight-head")
    qc.compose(fmap, inplace=True)
    qc.compose(ansatz, inplace=True)
    by_name = {p.name: p for p in qc.parameters}
    inputs = tuple(by_name[p.name] for p in fmap.parameters if p.name in by_name)
    weights = tuple(by_name[p.name] for p in ansatz.parameters if p.name in by_name)
    return HeadCircuit(qc, inputs, weights)


def readout_matrix(n: int, readout: Readout) -> NDArray[np.float64] | None:
    """Fixed linear map from the 2^n outcome probabilities to readout features.

    ``probabilities`` → None (the probabilities themselves); ``expectations`` → ⟨Z_q⟩ for each
    qubit; ``parity`` → ⟨Z_q⟩ and ⟨Z_q Z_r⟩ for every pair (n + n(n-1)/2 features). Outcome
    index k carries qubit q's bit as bit q of k (Qiskit's little-endian order).
    """
    if readout == "probabilities":
        return None
    k = np.arange(2**n)
    z = np.stack([1.0 - 2.0 * ((k >> q) & 1) for q in range(n)], axis=1)
    if readout == "expectations":
        return z
    pairs = [z[:, a] * z[:, b] for a, b in itertools.combinations(range(n), 2)]
    return np.asarray(np.concatenate([z, np.stack(pairs, axis=1)], axis=1), dtype=np.float64) if pairs else z


def readout_width(n: int, readout: Readout) -> int:
    """Number of readout features."""
    return {"probabilities": 1 << n, "expectations": n, "parity": n + n * (n - 1) // 2}[readout]
