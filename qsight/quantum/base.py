"""The interface every quantum sampler offers to the quantum head."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import nn

    from qsight.quantum.circuits import HeadCircuit


@runtime_checkable
class QuantumSampler(Protocol):
    """Runs the head's parametrised circuit; differentiable through torch.

    ``bind`` compiles the circuit once and returns a module mapping
    ``(angles (B, n_inputs), weights (n_weights,))`` to outcome probabilities
    ``(B, 2**qubits)`` (index k holds qubit q's bit as bit q of k, Qiskit's order), on the
    device of ``angles``; calls through it are serialised by a lock held by the module.
    """

    name: str

    def bind(self, circuit: HeadCircuit) -> nn.Module: ...

    def describe(self) -> dict[str, object]:
        """Device and options, for logs and environment.json."""
        ...
