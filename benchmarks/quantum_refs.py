"""Reference samplers for `quantum_head.py`: the benchmark circuit on PennyLane and on Aer's exact
statevector, as qsight samplers (``bind(circuit)`` → module (angles, weights) → probabilities), so
that every row times the same `QuantumHead` (LayerNorm → Linear → angles → circuit → readout).

Circuit (fixed, like the benchmark's): ZZ feature map (reps 2, full entanglement) + RealAmplitudes
(reps 2, reverse_linear), probabilities in Qiskit's bit order.
"""

from __future__ import annotations

import itertools
import math
import threading
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.shift import ShiftCircuit, gate_angle_circuit


def pennylane_gates(qml: Any, n: int, x: Any, w: Any) -> None:
    """The benchmark circuit in PennyLane (x broadcast over a leading batch axis)."""
    pairs = list(itertools.combinations(range(n), 2))
    linear = [(i, i + 1) for i in range(n - 1)][::-1]
    for _ in range(2):
        for q in range(n):
            qml.Hadamard(q)
            qml.PhaseShift(2 * x[..., q], q)
        for i, j in pairs:
            qml.CNOT([i, j])
            qml.PhaseShift(2 * (math.pi - x[..., i]) * (math.pi - x[..., j]), j)
            qml.CNOT([i, j])
    for r in range(3):
        for q in range(n):
            qml.RY(w[r * n + q], q)
        for i, j in linear if r < 2 else []:
            qml.CNOT([i, j])


class _Probs(nn.Module):
    """(angles (B, n), weights) → probabilities (B, 2^n) through `fn` (float64)."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn, self.lock = fn, threading.Lock()

    def forward(self, angles: Tensor, weights: Tensor) -> Tensor:
        with self.lock:
            out: Tensor = self.fn(angles.double(), weights.double())
            return out


class DefaultQubitSampler:
    """PennyLane ``default.qubit`` with backprop through torch, broadcast over the batch."""

    name = "pennylane"
    dtype = torch.float64

    def bind(self, circuit: HeadCircuit) -> nn.Module:
        import pennylane as qml

        n = circuit.num_qubits

        @qml.qnode(qml.device("default.qubit", wires=n), interface="torch", diff_method="backprop")
        def probs(x: Tensor, w: Tensor) -> Any:
            pennylane_gates(qml, n, x, w)
            return qml.probs(wires=list(range(n))[::-1])  # Qiskit's bit order

        return _Probs(probs)

    def describe(self) -> dict[str, object]:
        return {"sampler": self.name, "device": "default.qubit", "diff_method": "backprop"}


class LightningSampler:
    """PennyLane ``lightning.qubit``, ``diff_method="adjoint"``.

    Adjoint differentiation takes expectation values only, so the probabilities' vector-Jacobian
    product is taken as one: per sample, the adjoint gradient of ⟨H⟩ with H = diag(∂L/∂p) (a
    ``SparseHamiltonian``), since ∂L/∂θ = Σ_k ∂L/∂p_k·∂p_k/∂θ = ∂⟨ψ|H|ψ⟩/∂θ. The forward pass is one
    broadcast QNode call without gradients.
    """

    name = "lightning"
    dtype = torch.float64

    def bind(self, circuit: HeadCircuit) -> nn.Module:
        import pennylane as qml
        from scipy import sparse

        n = circuit.num_qubits
        dev = qml.device("lightning.qubit", wires=n)
        # H's index is PennyLane's (wire 0 most significant): bit-reverse Qiskit's
        reverse = np.array([int(format(k, f"0{n}b")[::-1], 2) for k in range(2**n)])

        @qml.qnode(dev, diff_method=None)
        def probs(x: Any, w: Any) -> Any:
            pennylane_gates(qml, n, x, w)
            return qml.probs(wires=list(range(n))[::-1])

        @qml.qnode(dev, interface="torch", diff_method="adjoint")
        def energy(x: Tensor, w: Tensor, h: Any) -> Any:
            pennylane_gates(qml, n, x, w)
            return qml.expval(qml.SparseHamiltonian(h, wires=range(n)))

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: Tensor, w: Tensor) -> Tensor:
                ctx.save_for_backward(x, w)
                p = np.asarray(probs(x.detach().numpy(), w.detach().numpy()))
                return torch.from_numpy(p).reshape(x.shape[0], -1)

            @staticmethod
            def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
                x, w = (t.detach() for t in ctx.saved_tensors)
                gx, gw = torch.zeros_like(x), torch.zeros_like(w)
                for b in range(x.shape[0]):
                    xb, wb = x[b].clone().requires_grad_(), w.clone().requires_grad_()
                    h = sparse.csr_matrix(sparse.diags(grad[b].double().numpy()[reverse]))
                    with torch.enable_grad():
                        gx[b], dw = torch.autograd.grad(energy(xb, wb, h), (xb, wb))
                    gw += dw
                return gx, gw

        return _Probs(lambda x, w: Fn.apply(x, w))

    def describe(self) -> dict[str, object]:
        return {"sampler": self.name, "device": "lightning.qubit", "diff_method": "adjoint (VJP per sample)"}


class AerStatevectorSampler:
    """Qiskit Aer's exact statevector: ``AerSimulator(method="statevector")`` with
    ``save_probabilities`` (probabilities from the final state, not sampled). Gradients by the
    parameter-shift rule, batched: the unshifted and all ±π/2-shifted gate-angle sets of a batch
    (B·(1 + 2K) circuits, K gate angles) go to Aer as one job of parameter bindings
    (`qsight.quantum.shift`, as qsight's `aer` sampler does with shots)."""

    name = "aer-sv"
    dtype = torch.float64

    def __init__(self, threads: int) -> None:
        from qiskit_aer import AerSimulator

        self.sim = AerSimulator(method="statevector", max_parallel_threads=threads)

    def bind(self, circuit: HeadCircuit) -> nn.Module:
        from qiskit import transpile

        measured, polys = gate_angle_circuit(circuit)
        qc = measured.remove_final_measurements(inplace=False)
        qc.save_probabilities()  # type: ignore[attr-defined]  # added by qiskit_aer
        compiled = transpile(qc, self.sim, optimization_level=0)
        params = list(qc.parameters)  # g[0..K-1], the order of the angle sets' columns

        def run(sets: np.ndarray) -> np.ndarray:
            flat = sets.reshape(-1, sets.shape[-1])
            binds = [{p: flat[:, k] for k, p in enumerate(params)}]
            result = self.sim.run(compiled, parameter_binds=binds, shots=1).result()
            out = np.stack([np.asarray(result.data(i)["probabilities"]) for i in range(len(flat))])
            return out.reshape(*sets.shape[:-1], -1)

        return ShiftCircuit(circuit, polys, run, True, threading.Lock())

    def describe(self) -> dict[str, object]:
        return {"sampler": self.name, "method": "statevector", "gradient": "parameter shift, batched"}
