"""Device-realistic sampling: fake backends (Aer and qiskit-ibm-runtime local mode), and circuit cost."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import Statevector
from torch import nn

from qsight.components import SAMPLERS
from qsight.errors import BadInputError
from qsight.quantum import AerParams, IbmRuntimeParams, QuantumHeadParams
from qsight.quantum.aer_sampler import AerSampler
from qsight.quantum.backend_names import fake_backend_classes
from qsight.quantum.circuits import CircuitSpec, build_circuit
from qsight.quantum.cost import circuit_cost, quantum_costs
from qsight.quantum.device import Program, compact, fake_backend, transpile_for
from qsight.quantum.head import build_head
from qsight.quantum.shift import ShiftCircuit, check_shift_rule, gate_angle_circuit
from qsight.quantum.torch_exact import TorchCircuit

ROOT = Path(__file__).resolve().parents[1]
HC = build_circuit(CircuitSpec(3, "zz", 2, "full", "real-amplitudes", 2, "linear"))


def inputs(rows: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, len(HC.inputs), generator=g, dtype=torch.float64) * 4 - 2
    w = torch.rand(len(HC.weights), generator=g, dtype=torch.float64) * 4 - 2
    return x.requires_grad_(), w.requires_grad_()


def test_fake_backend_names_need_no_import_of_the_runtime_client() -> None:
    code = (
        "import sys\nfrom qsight.quantum import AerParams, IbmRuntimeParams\n"
        "assert AerParams(backend='fake_torino').backend == 'fake_torino'\n"
        "assert IbmRuntimeParams(backend='fake_manila').backend == 'fake_manila'\n"
        "heavy = [m for m in ('qiskit_ibm_runtime', 'qiskit', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    names = fake_backend_classes()
    assert names["fake_torino"] == "FakeTorino" and names["fake_manila"] == names["fake_manila_v2"] == "FakeManilaV2"


def test_unknown_backend_fails_validation_with_close_matches() -> None:
    with pytest.raises(ValidationError, match=r"unknown fake backend 'fake_torin'; did you mean 'fake_torino'"):
        QuantumHeadParams.model_validate({"sampler": {"type": "aer", "backend": "fake_torin"}})
    with pytest.raises(ValidationError, match="fake_sherbroke"):
        IbmRuntimeParams(backend="fake_sherbroke")
    with pytest.raises(ValidationError, match="either backend"):
        AerParams(backend="fake_torino", depolarizing_2q=0.01)
    res = subprocess.run(
        [sys.executable, "-m", "qsight", "validate", str(ROOT / "experiments" / "smoke.toml"), "--set",
         'model.heads.quantum.sampler={type="aer", backend="fake_torinoo"}'],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "model.heads.quantum.sampler.backend" in res.stderr and "did you mean 'fake_torino'" in res.stderr


def test_transpiled_circuit_uses_backend_gates_and_couplings_and_keeps_the_distribution() -> None:
    measured, polys = gate_angle_circuit(HC)
    backend = fake_backend("fake_torino")
    dc = transpile_for(Program.of(measured), backend, 2, 0)
    target = backend.target
    for ins in dc.isa.data:
        name, qargs = ins.operation.name, tuple(dc.isa.find_bit(q).index for q in ins.qubits)
        if name != "barrier":
            assert name in target.operation_names and qargs in target[name], (name, qargs)
    check_shift_rule(dc.isa, len(polys))
    small, noise = compact(dc)
    assert small.num_qubits == len(dc.physical) < 10 and set(noise.noise_qubits) <= set(range(small.num_qubits))
    # the transpiled circuit, run exactly, gives the logical distribution and exact parameter-shift gradients
    circuit = ShiftCircuit(HC, polys, exact_run(small), True, threading.Lock())
    lin = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads, probs = [], []
    for module in (circuit, TorchCircuit(HC)):
        x, w = inputs(rows=2)
        out = module(x, w)
        (out @ lin).sum().backward()
        probs.append(out.detach())
        grads.append(torch.cat([x.grad.flatten(), w.grad.flatten()]))  # type: ignore[union-attr]
    torch.testing.assert_close(probs[0], probs[1], atol=1e-9, rtol=0)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-9, rtol=0)


def exact_run(small: QuantumCircuit):  # type: ignore[no-untyped-def]
    """Exact probabilities of the measured qubits, in classical-bit order, for each angle set."""
    measured = {small.find_bit(i.clbits[0]).index: small.find_bit(i.qubits[0]).index
                for i in small.data if i.operation.name == "measure"}
    qargs = [measured[c] for c in range(len(measured))]
    bare = small.remove_final_measurements(inplace=False)

    def run(sets: np.ndarray) -> np.ndarray:
        return np.stack([[Statevector(bare.assign_parameters(s)).probabilities(qargs) for s in row] for row in sets])

    return run


def test_device_noise_sampling_is_near_exact_and_visibly_noisy() -> None:
    x, w = inputs()
    exact = TorchCircuit(HC)(x, w).detach()
    with torch.no_grad():
        ideal = AerSampler(AerParams(shots=4000, seed=3)).bind(HC)(x, w)
        device = AerSampler(AerParams(shots=4000, seed=3, backend="fake_torino")).bind(HC)(x, w)
        again = AerSampler(AerParams(shots=4000, seed=3, backend="fake_torino")).bind(HC)(x, w)
    assert (device - exact).abs().max() < 0.15  # looser than shots alone …
    assert (device - exact).abs().sum() > 2 * (ideal - exact).abs().sum()  # … because the device is noisy
    assert torch.equal(device, again)  # seeded


def test_layout_is_chosen_once_and_shared_with_the_cost_report() -> None:
    transpile_for.cache_clear()
    p = QuantumHeadParams(qubits=2, reps=1, feature_map_reps=1,
                          sampler={"type": "aer", "backend": "fake_torino", "shots": 64, "seed": 5})
    head = build_head(p, in_dim=4, num_classes=3)
    feats = torch.randn(3, 4)
    for _ in range(2):
        head(feats).sum().backward()
    cost = quantum_costs([("q", head), ("linear", nn.Linear(4, 3))], train_size=10)
    assert list(cost) == ["q"] and cost["q"]["backend"] == "fake_torino" and not cost["q"]["reference_backend"]
    info = transpile_for.cache_info()
    assert info.misses == 1 and info.hits == 1  # one transpile: the sampler's, reused by the cost report
    assert cost["q"]["shots"] == 64 and cost["q"]["physical_qubits"] == head.sampler.circuits[0]["physical_qubits"]


def test_ibm_runtime_real_device_without_token_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    p = QuantumHeadParams.model_validate({"sampler": {"type": "ibm-runtime", "backend": "ibm_torino"}})
    with pytest.raises(BadInputError, match=r"'ibm_torino'.*QISKIT_IBM_TOKEN"):
        SAMPLERS.get("ibm-runtime").build(p.sampler)


def test_ibm_runtime_local_mode_runs_a_batch_as_one_job() -> None:
    hc = build_circuit(CircuitSpec(2, "zz", 1, "full", "real-amplitudes", 1, "linear"))
    params = QuantumHeadParams.model_validate(
        {"sampler": {"type": "ibm-runtime", "backend": "fake_manila", "shots": 2000, "seed": 4}}
    ).sampler
    sampler = SAMPLERS.get("ibm-runtime").build(params)
    circuit = sampler.bind(hc)
    x = torch.rand(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    w = torch.rand(len(hc.weights), dtype=torch.float64).requires_grad_()
    out = circuit(x, w)
    (out @ torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)).sum().backward()
    exact = TorchCircuit(hc)(x, w).detach()
    assert out.shape == (3, 4) and (out.detach() - exact).abs().max() < 0.15
    assert len(sampler.jobs) == 1  # the batch with all its shifted angle sets: one job
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert sampler.describe()["mode"] == "local testing mode"


def test_cost_report_numbers() -> None:
    spec = CircuitSpec(3, "zz", 2, "full", "real-amplitudes", 1, "reverse_linear")  # the smoke run's circuit
    cost = circuit_cost(build_circuit(spec), train_size=96)
    # zz, 2 reps on 3 qubits: (3 single + 3 pair phases) × 2; RealAmplitudes, 1 rep: 2 × 3 RY
    assert cost["gate_angles"] == 18 and cost["parameters"] == 3 + 6
    assert cost["circuits_per_epoch"] == 96 * (1 + 2 * 18)
    assert cost["backend"] == "fake_torino" and cost["reference_backend"] and cost["shots"] is None
    assert cost["two_qubit_gates"] > 0 and cost["transpiled_two_qubit_gates"] > 0
    assert cost["transpiled_depth"] > cost["depth"]
    deeper = circuit_cost(build_circuit(CircuitSpec(3, "zz", 2, "full", "real-amplitudes", 4, "reverse_linear")), 96)
    assert 0 < deeper["estimated_fidelity"] < cost["estimated_fidelity"] < 1
    flat = circuit_cost(build_circuit(CircuitSpec(1, "z", 1, "full", "real-amplitudes", 1, "linear")), 5)
    assert flat["two_qubit_gates"] == flat["transpiled_two_qubit_gates"] == 0


def test_shift_rule_check_rejects_shared_or_scaled_angles() -> None:
    a = Parameter("a")
    twice = QuantumCircuit(1)
    twice.rz(a, 0)
    twice.rx(a, 0)
    with pytest.raises(NotImplementedError, match="several gates"):
        check_shift_rule(twice, 1)
    scaled = QuantumCircuit(1)
    scaled.rz(a / 2, 0)
    with pytest.raises(NotImplementedError, match="slope"):
        check_shift_rule(scaled, 1)


def test_reference_cost_is_kept_on_disk_and_read_back_without_a_transpile(tmp_path: Path) -> None:
    hc = build_circuit(CircuitSpec(3, reps=1))
    first = circuit_cost(hc, 10, cache_dir=tmp_path)
    (kept,) = (tmp_path / "transpiled").glob("*.json")
    transpile_for.cache_clear()
    again = circuit_cost(build_circuit(CircuitSpec(3, reps=1)), 12, cache_dir=tmp_path)  # rebuilt: new Parameters
    assert transpile_for.cache_info().currsize == 0  # read from `kept`, nothing transpiled
    assert again == {**first, "circuits_per_epoch": 12 * (1 + 2 * first["gate_angles"])}
    other = circuit_cost(build_circuit(CircuitSpec(2, reps=1)), 10, cache_dir=tmp_path)
    assert len(list((tmp_path / "transpiled").glob("*.json"))) == 2 and other["qubits"] == 2
    assert circuit_cost(hc, 10, seed=None, cache_dir=tmp_path)["backend"] == first["backend"]  # not kept: random
    assert len(list((tmp_path / "transpiled").glob("*.json"))) == 2
    for damaged in ("{not json", '{"backend": "fake_torino"}'):
        kept.write_text(damaged)
        assert circuit_cost(hc, 10, cache_dir=tmp_path) == first  # a damaged file is transpiled again
