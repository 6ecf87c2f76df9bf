"""torch-exact against Qiskit's Statevector, and its gradients against finite differences."""

from __future__ import annotations

import itertools
import random
from typing import get_args

import numpy as np
import pytest
import torch

from qsight.quantum.circuits import CircuitSpec, build_circuit
from qsight.quantum.params import Ansatz, Entanglement, FeatureMap
from qsight.quantum.torch_exact import TorchCircuit
from tests.helpers import qiskit_probabilities

COMBOS = list(itertools.product(get_args(FeatureMap), get_args(Ansatz), get_args(Entanglement)))


@pytest.mark.parametrize(("fmap", "ansatz", "ent"), COMBOS)
def test_matches_qiskit_statevector(fmap: FeatureMap, ansatz: Ansatz, ent: Entanglement) -> None:
    rng = np.random.default_rng(COMBOS.index((fmap, ansatz, ent)))
    n = int(rng.integers(1, 7))
    spec = CircuitSpec(
        n,
        fmap,
        int(rng.integers(1, 3)),
        ent,
        ansatz,
        int(rng.integers(1, 3)),
        random.Random(n).choice(get_args(Entanglement)),
    )
    hc = build_circuit(spec)
    x = rng.uniform(-np.pi, np.pi, (3, len(hc.inputs)))
    w = rng.uniform(-np.pi, np.pi, len(hc.weights))
    got = TorchCircuit(hc)(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(got, qiskit_probabilities(hc, x, w), atol=1e-6, rtol=0)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-12)


def test_float32_is_close_and_keeps_dtype() -> None:
    hc = build_circuit(CircuitSpec(5))
    x, w = torch.rand(4, 5) * 3, torch.rand(len(hc.weights)) * 3
    lo = TorchCircuit(hc, torch.float32)(x, w)
    hi = TorchCircuit(hc)(x.double(), w.double())
    assert lo.dtype == torch.float32
    torch.testing.assert_close(lo.double(), hi, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("fmap", "ansatz"), [("zz", "real-amplitudes"), ("angle", "efficient-su2")])
def test_gradients_match_finite_differences(fmap: FeatureMap, ansatz: Ansatz) -> None:
    hc = build_circuit(CircuitSpec(3, fmap, 2, "full", ansatz, 1, "circular"))
    tc = TorchCircuit(hc)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, len(hc.inputs), dtype=torch.float64, generator=g).requires_grad_()
    w = torch.rand(len(hc.weights), dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(tc, (x, w), eps=1e-6, atol=1e-6)


def test_big_circuit_chunks_agree() -> None:
    """Nine qubits: layers span several Kronecker chunks."""
    hc = build_circuit(CircuitSpec(9, "zz", 1, "linear", "efficient-su2", 1, "full"))
    rng = np.random.default_rng(9)
    x, w = rng.uniform(-3, 3, (2, 9)), rng.uniform(-3, 3, len(hc.weights))
    got = TorchCircuit(hc)(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(got, qiskit_probabilities(hc, x, w), atol=1e-6, rtol=0)
