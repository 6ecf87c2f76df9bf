"""The `aer` sampler: ``qiskit_aer.primitives.SamplerV2`` with shots, seed, noise and a device.

Aer's SamplerV2 has no exact mode: it always samples (``shots=None`` at ``run`` silently means
the default 1024 shots). Gradients: parameter shift on a gate-angle circuit (`qsight.quantum.shift`),
one PUB a batch. With ``backend`` (a qiskit-ibm-runtime fake device) the circuit is transpiled for
the device once (`qsight.quantum.device`) and sampled under the device's noise on the physical
qubits it uses.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, depolarizing_error
from qiskit_aer.primitives import SamplerV2
from torch import nn

from qsight.errors import BadInputError
from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.device import Program, compact, fake_backend, transpile_for
from qsight.quantum.gates import SUPPORTED
from qsight.quantum.params import AerParams
from qsight.quantum.shift import RunSets, ShiftCircuit, check_shift_rule, gate_angle_circuit, probabilities

log = logging.getLogger("qsight.quantum")
# Under device noise Aer simulates a density matrix (2n effective qubits). Its per-gate OpenMP
# parallelism starts at 14 effective qubits by default, where the threads' synchronisation costs
# more than it saves: 8 qubits, 8 × 1024 shots took 18 s with it and 4.3 s without on a loaded
# 2-core machine. Parallelise per gate only for larger states.
_DENSITY_PARALLEL_THRESHOLD = 20
_TWO_QUBIT = ["cx", "cz", "cp", "crz", "rzz", "swap"]
_ONE_QUBIT = [g for g in SUPPORTED if g not in _TWO_QUBIT]


def choose_device(requested: str) -> tuple[str, dict[str, object]]:
    """'CPU' or 'GPU' for Aer, and what the probes saw; 'GPU' when none is usable is an error."""
    aer_devices = tuple(AerSimulator().available_devices())
    cuda = torch.cuda.is_available()
    probes: dict[str, object] = {"aer_devices": list(aer_devices), "torch_cuda": cuda}
    if requested == "GPU" and "GPU" not in aer_devices:
        raise BadInputError(
            f"aer sampler: device 'GPU' asked for but Aer offers only {list(aer_devices)} "
            "(install qiskit-aer-gpu on a CUDA machine, or use device = 'auto' or 'CPU')"
        )
    device = requested if requested != "auto" else ("GPU" if "GPU" in aer_devices and cuda else "CPU")
    return device, probes


def noise_model(p: AerParams) -> NoiseModel | None:
    """Depolarising errors on every 1- and 2-qubit gate, or None when both rates are 0."""
    if p.depolarizing_1q == 0 and p.depolarizing_2q == 0:
        return None
    model = NoiseModel()
    if p.depolarizing_1q > 0:
        model.add_all_qubit_quantum_error(depolarizing_error(p.depolarizing_1q, 1), _ONE_QUBIT)
    if p.depolarizing_2q > 0:
        model.add_all_qubit_quantum_error(depolarizing_error(p.depolarizing_2q, 2), _TWO_QUBIT)
    return model


def sample_run(sampler: SamplerV2 | Any, circuit: QuantumCircuit, n: int) -> RunSets:
    """Angle sets (B, S, K) → probabilities (B, S, 2^n): one PUB, one `sampler.run` call."""

    def run(sets: np.ndarray) -> np.ndarray:
        result = sampler.run([(circuit, sets)]).result()
        return probabilities(result[0].data.meas, n)

    return run


class AerSampler:
    """Qiskit Aer SamplerV2 on the chosen device, optionally as a fake device (module docstring)."""

    name = "aer"

    def __init__(self, p: AerParams) -> None:
        self.params = p
        self.device, self.probes = choose_device(p.device)
        self.backend_options: dict[str, Any] = {"device": self.device}
        if p.method != "automatic":
            self.backend_options["method"] = p.method
        model = noise_model(p)
        if model is not None:
            self.backend_options["noise_model"] = model
        self.sampler = SamplerV2(default_shots=p.shots, seed=p.seed, options={"backend_options": self.backend_options})
        self.backend = None if p.backend is None else fake_backend(p.backend)
        if self.backend is not None:
            self.backend_options["statevector_parallel_threshold"] = _DENSITY_PARALLEL_THRESHOLD
        self.optimization_level = p.optimization_level
        self.circuits: list[dict[str, object]] = []
        self.lock = threading.Lock()
        log.info(
            "aer sampler on %s (asked %s; probes %s); backend options %s, device backend %s, shots %d, seed %s",
            self.device,
            p.device,
            self.probes,
            self._options(),
            p.backend,
            p.shots,
            p.seed,
        )

    def _options(self) -> dict[str, object]:
        return {k: (str(v) if k == "noise_model" else v) for k, v in self.backend_options.items()}

    def bind(self, circuit: HeadCircuit) -> nn.Module:
        measured, polys = gate_angle_circuit(circuit)
        gradient = self.params.gradient != "none"
        if self.backend is None:
            run = sample_run(self.sampler, measured, circuit.num_qubits)
        else:
            run = self._device_run(measured, len(polys), gradient, circuit.num_qubits)
        return ShiftCircuit(circuit, polys, run, gradient, self.lock)

    def _device_run(self, measured: QuantumCircuit, angles: int, gradient: bool, n: int) -> RunSets:
        """Transpile once for the fake device; sample on the used qubits under their noise."""
        p = self.params
        dc = transpile_for(Program.of(measured), self.backend, p.optimization_level, p.seed)
        if gradient:
            check_shift_rule(dc.isa, angles)
        small, noise = compact(dc)
        options = {"backend_options": {**self.backend_options, "noise_model": noise}}
        self.circuits.append(
            {"physical_qubits": list(dc.physical), "transpiled_depth": dc.depth, "two_qubit_gates": dc.two_qubit_gates}
        )
        log.info("aer sampler: %s noise on physical qubits %s", p.backend, list(dc.physical))
        return sample_run(SamplerV2(default_shots=p.shots, seed=p.seed, options=options), small, n)

    def describe(self) -> dict[str, object]:
        p = self.params
        device = {} if p.backend is None else {
            "backend": p.backend, "optimization_level": p.optimization_level, "device_circuits": self.circuits,
            "noise": f"calibration of {p.backend} (qiskit-ibm-runtime fake backend) on the qubits used",
        }
        return {
            "sampler": self.name,
            "device": self.device,
            "requested_device": p.device,
            **self.probes,
            "backend_options": self._options(),
            "shots": p.shots,
            "seed": p.seed,
            "exact": False,
            "depolarizing": {"1q": p.depolarizing_1q, "2q": p.depolarizing_2q},
            **device,
            "gradient": p.gradient,
            "note": "Aer SamplerV2 always samples; it has no exact mode",
        }
