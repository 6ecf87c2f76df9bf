"""The `statevector` sampler: Qiskit's reference path, SamplerQNN + TorchConnector.

Exact by default (qiskit-machine-learning's ``QMLSampler`` with ``shots=None``, a
``StatevectorSampler``); gradients by qiskit-machine-learning's parameter shift. Slow (every
sample and every shifted parameter set is a circuit), so it is the reference, not the workhorse.
TorchConnector returns float32, so agreement with `torch-exact` is to ~1e-7.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from qiskit_machine_learning.connectors import TorchConnector
from qiskit_machine_learning.neural_networks import SamplerQNN
from qiskit_machine_learning.primitives import QMLSampler
from torch import Tensor, nn

from qsight.quantum.circuits import HeadCircuit


class _LockedQNN(SamplerQNN):
    """A SamplerQNN whose forward and backward passes hold a lock (one sampler call at a time)."""

    def __init__(self, lock: threading.Lock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = lock

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return super().forward(*args, **kwargs)

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return super().backward(*args, **kwargs)


class QiskitCircuit(nn.Module):
    """Inputs and weights both enter the QNN as inputs, so the head owns its weights."""

    def __init__(self, hc: HeadCircuit, sampler: QMLSampler) -> None:
        super().__init__()
        self.lock = threading.Lock()
        qnn = _LockedQNN(
            self.lock,
            circuit=hc.circuit,
            sampler=sampler,
            input_params=[*hc.inputs, *hc.weights],
            weight_params=[],
            input_gradients=True,
        )
        self.connector = TorchConnector(qnn)

    def forward(self, angles: Tensor, weights: Tensor) -> Tensor:
        w = weights.to(angles.device, angles.dtype).expand(angles.shape[0], -1)
        p = torch.cat([angles, w], 1).to("cpu", torch.float64)
        out: Tensor = self.connector(p)
        return out.to(angles.device)


class StatevectorQNNSampler:
    """`qiskit.primitives.StatevectorSampler` (exact unless `shots`) through SamplerQNN."""

    name = "statevector"

    def __init__(self, shots: int | None = None, seed: int | None = None) -> None:
        self.shots, self.seed = shots, seed

    def bind(self, circuit: HeadCircuit) -> nn.Module:
        kwargs: dict[str, Any] = {} if self.shots is None else {"seed": self.seed}
        return QiskitCircuit(circuit, QMLSampler(shots=self.shots, **kwargs))

    def describe(self) -> dict[str, object]:
        return {
            "sampler": self.name,
            "device": "CPU",
            "shots": self.shots,
            "seed": self.seed,
            "exact": self.shots is None,
            "gradient": "parameter-shift (qiskit-machine-learning)",
        }
