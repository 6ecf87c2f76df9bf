"""torch-exact's block path (n > dense.MAX_QUBITS): Qiskit agreement at 12 qubits, gradients, reused memory."""

from __future__ import annotations

import numpy as np
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from torch.func import functional_call

from qsight.quantum import QuantumHeadParams, quantum_head
from qsight.quantum.circuits import CircuitSpec, HeadCircuit, build_circuit
from qsight.quantum.head import QuantumHead
from qsight.quantum.torch_exact import DiagBlock, TorchCircuit
from qsight.quantum.workspace import Workspace
from tests.helpers import in_threads, qiskit_probabilities
from tests.helpers import mixed_circuit as shared_mixed_circuit


def mixed_circuit() -> HeadCircuit:
    """Seven qubits: per-sample complex chunks (rx of inputs), shared complex ones, a constant prefix."""
    hc: HeadCircuit = shared_mixed_circuit(7)
    hc.circuit.rx(hc.weights[0], 5)
    hc.circuit.sx(6)
    hc.circuit.y(3)
    return hc


def parity_circuit() -> HeadCircuit:
    """Six qubits: a phase on b3 ⊕ b2 ⊕ b1 ⊕ b0 (Walsh degree 4), so the general phase path."""
    x, t = [Parameter(f"x{i}") for i in range(3)], [Parameter(f"t{i}") for i in range(2)]
    qc = QuantumCircuit(6)
    qc.h(range(6))
    for q in range(3):
        qc.cx(q, q + 1)
    qc.rz(x[0] * t[0], 3)
    qc.rzz(x[1] + x[2], 4, 5)
    qc.ry(t[1], 0)
    qc.rx(x[2], 5)
    return HeadCircuit(qc, tuple(x), tuple(t))


def inputs(hc: HeadCircuit, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, len(hc.inputs), dtype=torch.float64, generator=g) * 6 - 3).requires_grad_()
    w = (torch.rand(len(hc.weights), dtype=torch.float64, generator=g) * 6 - 3).requires_grad_()
    return x, w


def test_twelve_qubits_match_statevector() -> None:
    hc = build_circuit(CircuitSpec(12))
    rng = np.random.default_rng(12)
    x, w = rng.uniform(-np.pi, np.pi, (2, 12)), rng.uniform(-np.pi, np.pi, len(hc.weights))
    tc = TorchCircuit(hc)
    assert tc.dense is None
    got = tc(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(got, qiskit_probabilities(hc, x, w), atol=1e-12, rtol=0)


def check_gradients(tc: TorchCircuit, x: torch.Tensor, w: torch.Tensor, full: bool) -> None:
    """gradcheck of both arguments, then of each alone (the other's ops keep no state)."""
    assert torch.autograd.gradcheck(tc, (x, w), eps=1e-6, atol=1e-7, fast_mode=not full)
    assert torch.autograd.gradcheck(lambda a: tc(a, w.detach()), (x,), eps=1e-6, atol=1e-7, fast_mode=True)
    assert torch.autograd.gradcheck(lambda b: tc(x.detach(), b), (w,), eps=1e-6, atol=1e-7, fast_mode=True)


def test_block_path_gradcheck() -> None:
    for hc, full in ((build_circuit(CircuitSpec(6)), True), (mixed_circuit(), False), (parity_circuit(), False)):
        check_gradients(TorchCircuit(hc, dense=False), *inputs(hc, 1 if full else 2, 6), full)


def test_phase_paths_match_statevector() -> None:
    """Quadratic phases (ZZ map) and general ones (parity phase), per-sample and complex chunks."""
    for hc, quadratic in ((build_circuit(CircuitSpec(7, "zz", 2, "linear")), True), (mixed_circuit(), True),
                          (parity_circuit(), False)):
        tc = TorchCircuit(hc)
        assert [b.phase.quadratic for b in tc.parts if isinstance(b, DiagBlock) and b.phase] == [quadratic] * len(
            [b for b in tc.parts if isinstance(b, DiagBlock) and b.phase])
        x, w = inputs(hc, 3, 7)
        got = tc(x, w).detach().numpy()
        want = qiskit_probabilities(hc, x.detach().numpy(), w.detach().numpy())
        np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)


def test_head_gradcheck_float64() -> None:
    torch.manual_seed(0)
    head = quantum_head(QuantumHeadParams.model_validate({"qubits": 6}), 8, 3)
    assert isinstance(head, QuantumHead) and head.dtype == torch.float64
    assert head.circuit.dense is None  # type: ignore[union-attr]
    features = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    weights = head.weights.detach().clone().requires_grad_()

    def f(feat: torch.Tensor, wts: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(head, {"weights": wts}, (feat,))
        return out

    assert torch.autograd.gradcheck(f, (features, weights), eps=1e-6, atol=1e-7)


def test_inference_mode_then_training_and_retained_graph() -> None:
    hc = build_circuit(CircuitSpec(7))
    tc = TorchCircuit(hc)
    x, w = inputs(hc, 3, 1)
    with torch.inference_mode():  # work memory first made here must serve calls outside it
        first = tc(x, w)
    p = tc(x, w)
    r = torch.randn_like(p)
    g1 = torch.autograd.grad((p * r).sum(), (x, w), retain_graph=True)
    other = tc(x.detach() + 0.5, w.detach())  # reuses work memory, not the states kept for p's backward
    g2 = torch.autograd.grad((p * r).sum(), (x, w))
    assert torch.equal(first, p.detach()) and not torch.allclose(other, p)
    for a, b in zip(g1, g2, strict=True):
        assert torch.equal(a, b)
    one = tc(x[:1].detach(), w.detach())  # a batch of one: the result is no view of the work memory
    kept = one.clone()
    tc(x[1:2].detach(), w.detach())
    assert torch.equal(one, kept)


def test_threads_forward_and_backward_match_serial() -> None:
    hc = build_circuit(CircuitSpec(6))
    tc = TorchCircuit(hc)
    jobs = [inputs(hc, 5, seed) for seed in range(12)]

    def grads(x: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
        p = tc(x, w)
        return [p.detach(), *torch.autograd.grad((p * p).sum(), (x, w))]

    serial = [grads(x, w) for x, w in jobs]
    results: list[list[torch.Tensor] | None] = [None] * len(jobs)

    def work(t: int) -> None:
        for i in range(t, len(jobs), 4):
            results[i] = grads(*jobs[i])

    assert not in_threads(work, 4)
    for got, want in zip(results, serial, strict=True):
        assert got is not None and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_workspace_lends_memory_back_once_released() -> None:
    work, like = Workspace(), torch.zeros(1, dtype=torch.float64)
    a = work.lend(100, like)
    b = work.lend(50, like)
    assert a.flat.data_ptr() != b.flat.data_ptr()
    ptr = a.flat.data_ptr()
    del a
    c = work.lend(80, like)  # a's memory is free again, and large enough
    assert c.flat.data_ptr() == ptr and c.flat.numel() == 80
    x, y = c.alloc((4, 5)), c.alloc((60,))
    assert x.data_ptr() == ptr and y.data_ptr() == ptr + 20 * 8
