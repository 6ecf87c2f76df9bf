"""The aer sampler: device choice, sampling statistics, noise, and parameter-shift gradients."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.quantum_info import Statevector

from qsight.errors import BadInputError
from qsight.quantum.aer_sampler import AerSampler, choose_device
from qsight.quantum.circuits import CircuitSpec, build_circuit
from qsight.quantum.params import AerParams
from qsight.quantum.shift import gate_angle_circuit
from qsight.quantum.torch_exact import TorchCircuit

HC = build_circuit(CircuitSpec(3, "zz", 1, "full", "real-amplitudes", 1, "linear"))


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(3, 3, generator=g, dtype=torch.float64) * 4 - 2).requires_grad_()
    w = (torch.rand(len(HC.weights), generator=g, dtype=torch.float64) * 4 - 2).requires_grad_()
    return x, w


def test_auto_picks_cpu_here_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU machine")
    with caplog.at_level(logging.INFO, logger="qsight.quantum"):
        sampler = AerSampler(AerParams(device="auto"))
    assert sampler.device == "CPU" and sampler.describe()["device"] == "CPU"
    assert any("aer sampler on CPU" in r.getMessage() and "backend options" in r.getMessage() for r in caplog.records)


def test_explicit_gpu_without_one_is_bad_input() -> None:
    if choose_device("auto")[1]["aer_devices"] != ["CPU"]:
        pytest.skip("Aer offers a GPU here")
    with pytest.raises(BadInputError, match="GPU"):
        AerSampler(AerParams(device="GPU"))


def test_shots_approximate_exact_probabilities() -> None:
    shots = 20_000
    x, w = inputs()
    with torch.no_grad():
        got = AerSampler(AerParams(shots=shots, seed=5)).bind(HC)(x, w)
        again = AerSampler(AerParams(shots=shots, seed=5)).bind(HC)(x, w)
    exact = TorchCircuit(HC)(x, w).detach()
    tol = 5 * torch.sqrt(exact * (1 - exact) / shots) + 1e-3
    assert torch.all((got - exact).abs() <= tol)
    assert torch.equal(got, again)  # seeded


def test_depolarising_noise_moves_towards_uniform() -> None:
    x, w = inputs(1)
    with torch.no_grad():
        clean = AerSampler(AerParams(shots=4000)).bind(HC)(x, w)
        noisy = AerSampler(AerParams(shots=4000, depolarizing_1q=0.3, depolarizing_2q=0.3)).bind(HC)(x, w)
    assert (noisy - 1 / 8).abs().sum() < (clean - 1 / 8).abs().sum()


def _exact_run(circuit: QuantumCircuit):  # type: ignore[no-untyped-def]
    """Stand-in for the Aer call: the same angle sets, evaluated exactly."""
    bare = circuit.remove_final_measurements(inplace=False)

    def run(sets: np.ndarray) -> np.ndarray:
        return np.stack([[Statevector(bare.assign_parameters(s)).probabilities() for s in row] for row in sets])

    return run


def test_parameter_shift_gradients_are_exact_given_exact_probabilities() -> None:
    circuit = AerSampler(AerParams()).bind(HC)
    circuit.run = _exact_run(gate_angle_circuit(HC)[0])
    lin = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = []
    for module in (circuit, TorchCircuit(HC)):
        x, w = inputs(3)
        (module(x, w) @ lin).sum().backward()
        grads.append(torch.cat([x.grad.flatten(), w.grad.flatten()]))  # type: ignore[union-attr]
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=0)


def test_no_gradient_mode_stops_at_circuit() -> None:
    x, w = inputs()
    out = AerSampler(AerParams(shots=64, gradient="none")).bind(HC)(x, w)
    out.sum().backward()
    assert x.grad is None or torch.all(x.grad == 0)
