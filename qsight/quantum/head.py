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
    in training mode; ``set_anneal`` moves both along a stage's schedule. The head computes in
    its sampler's real dtype end to end (``torch-exact``'s ``dtype``; float32 for the others):
    its parameters, the angles, the probabilities and the readout; logits are returned in the
    dtype of the features given.
    """

    def __init__(self, p: QuantumHeadParams, in_dim: int, num_classes: int, sampler: QuantumSampler) -> None:
        super().__init__()
        self.params, self.sampler = p, sampler
        self.dtype: torch.dtype = getattr(sampler, "dtype", torch.float32)
        hc = build_circuit(CircuitSpec.from_params(p))
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, len(hc.inputs))
        self.circuit = sampler.bind(hc)
        # drawn in float32 whatever the dtype: the same initial weights at any precision
        self.weights = nn.Parameter(torch.empty(len(hc.weights)).uniform_(-math.pi, math.pi).to(self.dtype))
        r = readout_matrix(p.qubits, p.readout)
        self.register_buffer("readout_map", None if r is None else torch.from_numpy(r).to(self.dtype), persistent=False)
        # 2^n outcome probabilities average 2^-n: scaled to mean 1, the readout sees O(1) differences
        self.readout_gain = float(2**p.qubits) if r is None and p.readout_gain == "uniform" else 1.0
        self.readout = nn.Linear(readout_width(p.qubits, p.readout), num_classes)
        self.residual = nn.Linear(in_dim, num_classes) if p.residual else None
        # a buffer, so checkpoints, resumes and restored best epochs carry the temperature trained with
        self.register_buffer("temperature", torch.tensor(1.0, dtype=self.dtype))
        self.noise = 0.0
        self.batch_share = BatchShare()  # under torchrun: noise drawn as one process would draw it
        self.n_inputs, self.n_weights = len(hc.inputs), len(hc.weights)
        for module in (self.norm, self.proj, self.readout, self.residual):  # initialised in float32, then cast
            if module is not None:
                module.to(self.dtype)

    temperature: Tensor

    def set_anneal(self, temperature: float | None, noise: float) -> None:
        """Angle temperature (> 0; higher is softer; None keeps it) and training-time angle noise (≥ 0)."""
        if (temperature is not None and not temperature > 0) or not noise >= 0:
            raise ValueError(f"set_anneal needs temperature > 0 and noise ≥ 0, got {temperature}, {noise}")
        if temperature is not None:
            self.temperature.fill_(float(temperature))
        self.noise = float(noise)

    def angles(self, features: Tensor) -> Tensor:
        """The circuit's input angles (B, qubits), in the head's dtype."""
        z = self.proj(self.norm(features.to(self.dtype)))
        a = self.params.angle_scale * torch.tanh(z / self.temperature)
        if self.training and self.noise > 0:  # float32 draws: the same noise at any precision
            a = a + self.noise * randn_share(a, self.batch_share)
        return a

    def forward(self, features: Tensor) -> Tensor:
        with torch.autocast(features.device.type, enabled=False):
            x = features.to(self.dtype)
            probs = self.circuit(self.angles(x), self.weights)
            q = probs.to(self.dtype) * self.readout_gain
            if self.readout_map is not None:
                q = q @ self.readout_map
            logits: Tensor = self.readout(q)
            if self.residual is not None:
                logits = logits + self.residual(x)
        return logits.to(features.dtype)

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
