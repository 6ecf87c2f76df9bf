"""torch-exact's dense small-circuit path against its general block path (values and gradients)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector

from qsight.quantum.circuits import CircuitSpec, HeadCircuit, build_circuit
from qsight.quantum.dense import MAX_QUBITS
from qsight.quantum.torch_exact import TorchCircuit, _chunks
from tests.helpers import mixed_circuit, qiskit_probabilities

SPECS = [
    CircuitSpec(n, fmap, 2, "full", ansatz, 2, ent)
    for n, fmap, ansatz, ent in itertools.product(
        (1, 3, 4), ("zz", "z", "angle"), ("real-amplitudes", "efficient-su2"), ("reverse_linear", "circular")
    )
]


def both_paths(hc: HeadCircuit, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Probabilities and input/weight gradients of a random projection, dense path then general path."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(5, len(hc.inputs), dtype=torch.float64).uniform_(-np.pi, np.pi, generator=g).requires_grad_()
    w = torch.empty(len(hc.weights), dtype=torch.float64).uniform_(-np.pi, np.pi, generator=g).requires_grad_()
    r = torch.randn(5, 2**hc.num_qubits, dtype=torch.float64, generator=g)
    out = []
    for dense in (True, False):
        tc = TorchCircuit(hc, dense=dense)
        assert (tc.dense is not None) == dense
        p = tc(x, w)
        out.append([p.detach(), *torch.autograd.grad((p * r).sum(), (x, w))])
    return out[0], out[1]


def assert_agree(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, atol=1e-12 * max(1.0, v.abs().max().item()), rtol=0)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_dense_matches_general_path(spec: CircuitSpec) -> None:
    assert_agree(*both_paths(build_circuit(spec), SPECS.index(spec)))


def test_mixed_parameters_and_per_sample_layers() -> None:
    """Angles mixing inputs and weights, and rotation layers that differ per sample."""
    hc = mixed_circuit()
    dense, general = both_paths(hc, 7)
    assert_agree(dense, general)
    xv, wv = np.array([[0.4, -1.1]]), np.array([0.7, 1.9, -0.5])
    got = TorchCircuit(hc)(torch.from_numpy(xv), torch.from_numpy(wv)).numpy()[0]
    ref = qiskit_probabilities(hc, xv, wv)[0]
    np.testing.assert_allclose(got, ref, atol=1e-12, rtol=0)


def test_path_choice() -> None:
    assert TorchCircuit(build_circuit(CircuitSpec(4))).dense is not None
    assert TorchCircuit(build_circuit(CircuitSpec(MAX_QUBITS + 1))).dense is None
    # the angle map's last layer merges with the ansatz's first: 2^(2n) Fourier terms, too many
    assert TorchCircuit(build_circuit(CircuitSpec(5, "angle"))).dense is None


def test_dense_gradcheck_and_float32() -> None:
    hc = build_circuit(CircuitSpec(2, "zz", 2, "full", "efficient-su2", 1, "circular"))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, dtype=torch.float64, generator=g).requires_grad_()
    w = torch.rand(len(hc.weights), dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(TorchCircuit(hc), (x, w), eps=1e-6, atol=1e-6)
    lo = TorchCircuit(hc, torch.float32)(x.float(), w.float())
    assert lo.dtype == torch.float32
    torch.testing.assert_close(lo.double(), TorchCircuit(hc)(x, w), atol=1e-5, rtol=0)


def test_block_path_chunks_shrink_for_stacked_rotations() -> None:
    """Seven qubits, angle map: its last RY(x) layer merges with the ansatz's first RY(θ) layer."""
    assert _chunks([1] * 9) == [(0, 4), (4, 8), (8, 9)]
    assert _chunks([2] * 7) == [(0, 3), (3, 6), (6, 7)]
    assert _chunks([0, 7, 0]) == [(0, 1), (1, 2), (2, 3)]
    hc = build_circuit(CircuitSpec(7, "angle", 2, "linear", "efficient-su2", 1, "full"))
    rng = np.random.default_rng(7)
    x, w = rng.uniform(-3, 3, (2, 7)), rng.uniform(-3, 3, len(hc.weights))
    tc = TorchCircuit(hc)
    assert tc.dense is None
    got = tc(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    for xi, row in zip(x, got, strict=True):
        values = dict(zip(hc.inputs, xi, strict=True)) | dict(zip(hc.weights, w, strict=True))
        np.testing.assert_allclose(row, Statevector(hc.circuit.assign_parameters(values)).probabilities(), atol=1e-12)


def test_many_rotations_on_one_qubit() -> None:
    """One qubit: nothing separates the rotations, so one layer holds them all (split into pieces)."""
    hc = build_circuit(CircuitSpec(1, "angle", 8, "full", "real-amplitudes", 16, "full"))
    tc = TorchCircuit(hc)
    assert tc.dense is None and len(tc.blocks) == 9  # 25 rotations, ≤ 3 per block
    rng = np.random.default_rng(1)
    x, w = rng.uniform(-3, 3, (1, 1)), rng.uniform(-3, 3, len(hc.weights))
    got = tc(torch.from_numpy(x), torch.from_numpy(w)).numpy()[0]
    values = dict(zip(hc.inputs, x[0], strict=True)) | dict(zip(hc.weights, w, strict=True))
    np.testing.assert_allclose(got, Statevector(hc.circuit.assign_parameters(values)).probabilities(), atol=1e-12)
