"""The quantum head: features → LayerNorm → Linear → angles → circuit (sampler) → readout → logits."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from qsight.models.global_batch import BatchShare, randn_share
from qsight.quantum.base import QuantumSampler
from qsight.quantum.circuits import CircuitSpec, build_circuit, readout_matrix, readout_width
from qsight.quantum.params import QuantumHeadParams
from registry import component_type


class QuantumHead(nn.Module):
    """A hybrid head; safe to call from many threads (the bound circuit holds a lock).

    Angles are ``angle_scale · tanh(z / temperature)``, plus Gaussian noise of std ``noise``
    in training mode; ``set_anneal`` moves both along a stage's schedule.
    """

    def __init__(self, p: QuantumHeadParams, in_dim: int, num_classes: int, sampler: QuantumSampler) -> None:
        super().__init__()
        self.params, self.sampler = p, sampler
        hc = build_circuit(CircuitSpec.from_params(p))
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, len(hc.inputs))
        self.circuit = sampler.bind(hc)
        self.weights = nn.Parameter(torch.empty(len(hc.weights)).uniform_(-math.pi, math.pi))
        r = readout_matrix(p.qubits, p.readout)
        self.register_buffer("readout_map", None if r is None else torch.from_numpy(r).float(), persistent=False)
        self.readout = nn.Linear(readout_width(p.qubits, p.readout), num_classes)
        self.residual = nn.Linear(in_dim, num_classes) if p.residual else None
        # a buffer, so checkpoints, resumes and restored best epochs carry the temperature trained with
        self.register_buffer("temperature", torch.tensor(1.0))
        self.noise = 0.0
        self.batch_share = BatchShare()  # under torchrun: noise drawn as one process would draw it
        self.n_inputs, self.n_weights = len(hc.inputs), len(hc.weights)

    temperature: Tensor

    def set_anneal(self, temperature: float | None, noise: float) -> None:
        """Angle temperature (> 0; higher is softer; None keeps it) and training-time angle noise (≥ 0)."""
        if (temperature is not None and not temperature > 0) or not noise >= 0:
            raise ValueError(f"set_anneal needs temperature > 0 and noise ≥ 0, got {temperature}, {noise}")
        if temperature is not None:
            self.temperature.fill_(float(temperature))
        self.noise = float(noise)

    def angles(self, features: Tensor) -> Tensor:
        """The circuit's input angles (B, qubits)."""
        z = self.proj(self.norm(features))
        a = self.params.angle_scale * torch.tanh(z / self.temperature)
        if self.training and self.noise > 0:
            a = a + self.noise * randn_share(a, self.batch_share)
        return a

    def forward(self, features: Tensor) -> Tensor:
        a = self.angles(features)
        with torch.autocast(features.device.type, enabled=False):
            probs = self.circuit(a.float(), self.weights)
            q = probs.to(self.readout.weight.dtype)
            if self.readout_map is not None:
                q = q @ self.readout_map
            logits: Tensor = self.readout(q)
        if self.residual is not None:
            logits = logits + self.residual(features)
        return logits

    def describe(self) -> dict[str, Any]:
        """Sampler (name, device, options) and circuit, for logs and environment.json."""
        p = self.params
        return {
            **self.sampler.describe(),
            "circuit": {**CircuitSpec.from_params(p).__dict__, "inputs": self.n_inputs, "weights": self.n_weights},
            "readout": p.readout,
            "residual": p.residual,
        }


def build_head(p: QuantumHeadParams, in_dim: int, num_classes: int) -> QuantumHead:
    """The head with its sampler built from ``p.sampler`` (a validated component table)."""
    from qsight.components import SAMPLERS

    sampler = SAMPLERS.get(component_type(p.sampler)).build(p.sampler)
    return QuantumHead(p, in_dim, num_classes, sampler)
