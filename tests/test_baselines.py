"""Capacity-matched baselines, the entanglement ablation, float64 heads and per-module clipping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from qsight.config.spec import SpecError, validate_spec
from qsight.errors import BadInputError
from qsight.models.capacity import count_parameters, mlp_parameters
from qsight.models.heads import MlpHead
from qsight.models.hybrid import build_model
from qsight.quantum.circuits import CircuitSpec, build_circuit
from qsight.quantum.head import build_head
from qsight.quantum.params import QuantumHeadParams
from qsight.quantum.torch_exact import TorchCircuit
from qsight.training.loop import StepContext, train_epoch
from tests.helpers import cli, qiskit_probabilities, smoke_raw, summary, tiny_spec

MATCHED = {"type": "mlp", "input": "neck", "match_params": "quantum", "dropout": 0.0}


@pytest.mark.parametrize(("in_dim", "classes", "hidden", "layers"), [(8, 5, 99, 1), (3, 2, 1, 1), (16, 5, 40, 3)])
def test_mlp_parameter_formula(in_dim: int, classes: int, hidden: int, layers: int) -> None:
    head = MlpHead(in_dim, classes, hidden, layers)
    assert mlp_parameters(in_dim, classes, hidden, layers) == count_parameters(head)


def _spec(**heads: Any) -> Any:
    raw = smoke_raw()
    raw["model"]["heads"].update(heads)
    return validate_spec(raw)


@pytest.mark.parametrize(("qubits", "readout"), [(3, "probabilities"), (8, "probabilities"), (6, "parity")])
def test_match_params_lands_within_ten_percent(qubits: int, readout: str) -> None:
    raw = smoke_raw()
    raw["model"]["heads"]["quantum"].update(qubits=qubits, readout=readout)
    raw["model"]["heads"]["matched"] = MATCHED
    model = build_model(validate_spec(raw).model, 5)
    target, got = count_parameters(model.heads["quantum"]), count_parameters(model.heads["matched"])
    assert abs(got - target) <= 0.1 * target, (got, target)
    assert list(model.heads) == ["global", "compressed", "quantum", "matched"]  # spec order kept


def test_match_params_impossible_or_misnamed() -> None:
    tiny_target = {"type": "linear", "input": "neck"}  # 4·5 + 5 = 25 parameters
    too_big = {"type": "mlp", "input": "backbone", "match_params": "small", "layers": 2}
    with pytest.raises(BadInputError, match=r"model\.heads\.big\.match_params: no hidden width"):
        build_model(_spec(small=tiny_target, big=too_big).model, 5)
    for heads, message in (({"m": {**MATCHED, "match_params": "nope"}}, "unknown head 'nope'"),
                           ({"m": {**MATCHED, "match_params": "m"}}, "its own"),
                           ({"m": MATCHED, "n": {**MATCHED, "match_params": "m"}}, "itself sized")):
        with pytest.raises(SpecError, match=message):
            _spec(**heads)


NO_ENTANGLEMENT = [(4, "real-amplitudes", "full"), (7, "efficient-su2", "none"), (3, "real-amplitudes", "none")]


@pytest.mark.parametrize(("qubits", "ansatz", "fmap_ent"), NO_ENTANGLEMENT)
def test_no_entanglement_matches_statevector(qubits: int, ansatz: Any, fmap_ent: Any) -> None:
    hc = build_circuit(CircuitSpec(qubits, "zz", 2, fmap_ent, ansatz, 2, "none"))
    ops = hc.circuit.decompose(reps=3).count_ops()
    two_qubit = {"cx", "cz", "rzz", "cp", "swap"} & set(ops)
    assert not two_qubit if fmap_ent == "none" else two_qubit  # the zz map still entangles unless told not to
    ansatz_ops = build_circuit(CircuitSpec(qubits, "angle", 1, "none", ansatz, 2, "none")).circuit
    assert all(len(i.qubits) == 1 for i in ansatz_ops.decompose(reps=3).data)
    rng = np.random.default_rng(qubits)
    x = rng.uniform(-np.pi, np.pi, (3, len(hc.inputs)))
    w = rng.uniform(-np.pi, np.pi, len(hc.weights))
    want = qiskit_probabilities(hc, x, w)
    for dense in (True, False):
        got = TorchCircuit(hc, dense=dense)(torch.from_numpy(x), torch.from_numpy(w)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-10, rtol=0)


def test_float64_head_is_float64_end_to_end() -> None:
    p = QuantumHeadParams(qubits=3, reps=1, feature_map_reps=1, residual=True)
    head = build_head(p, 4, 5)
    assert {t.dtype for t in head.state_dict().values()} == {torch.float64}
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert head(x).dtype == torch.float64 and head(x.detach().float()).dtype == torch.float32
    assert torch.autograd.gradcheck(head, (x,), eps=1e-6, atol=1e-7)
    low_params = QuantumHeadParams(qubits=3, reps=1, sampler={"type": "torch-exact", "dtype": "float32"})
    low = build_head(low_params, 4, 5)
    assert {t.dtype for t in low.state_dict().values()} == {torch.float32}


def test_module_clip_scope_clips_each_group_alone() -> None:
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))

    def loss_fn(x: Any, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return 10.0 * a.sum() + 0.1 * b.sum(), {}

    batches = [(torch.zeros(1), torch.zeros(1))]
    grads = {}
    for scope, groups in (("stage", None), ("module", [[a], [b]])):
        opt = torch.optim.SGD([a, b], lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        with torch.no_grad():
            a.zero_()
            b.zero_()
        train_epoch(loss_fn, batches, StepContext(opt, sched, [a, b], torch.device("cpu"), grad_clip=1.0,
                                                  clip_groups=groups))
        grads[scope] = (-a.detach().clone(), -b.detach().clone())  # SGD step = -lr · clipped gradient
    torch.testing.assert_close(grads["module"][1], torch.full((2,), 0.1))  # small group untouched by the big one
    assert float(grads["stage"][1][0]) < 0.01
    assert float(grads["module"][0].norm()) == pytest.approx(1.0)


def _quantum_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    ck = torch.load(run_dir / "checkpoints" / "stage-quantum.pt", weights_only=True)
    return {k: v for k, v in ck["model"].items() if not k.startswith(("heads.matched", "combiner"))}


@pytest.mark.slow
def test_a_matched_head_leaves_the_other_heads_training_unchanged(tmp_path: Path) -> None:
    """quantum trains exactly as alone when matched joins its stage (clipped per module, monitored itself)."""
    same = {"stages__1__grad_clip_scope": "module", "stages__1__monitor": "val/quantum/qwk"}
    with_matched = {**same, "model__heads__matched": MATCHED, "stages__1__heads": ["quantum", "matched"],
                    "stages__1__train": ["heads.quantum", "heads.matched"],
                    "stages__2__heads": ["global", "compressed", "quantum", "matched"]}
    runs = {}
    for name, changes in (("alone", same), ("matched", with_matched)):
        runs[name] = tmp_path / name
        res = cli("run", str(tiny_spec(tmp_path, name=name, **changes)), "--run-dir", str(runs[name]))
        assert res.returncode == 0, res.stderr[-3000:]
    alone, matched = _quantum_tensors(runs["alone"]), _quantum_tensors(runs["matched"])
    assert alone.keys() == matched.keys()
    for key, value in alone.items():
        assert torch.equal(value, matched[key]), key
    finals = summary(runs["alone"])["final"], summary(runs["matched"])["final"]
    for head in ("global", "compressed", "quantum"):
        assert finals[0][f"val/{head}/qwk"] == finals[1][f"val/{head}/qwk"], head
    params = summary(runs["matched"])["parameters"]
    assert abs(params["matched"] - params["quantum"]) <= 0.1 * params["quantum"]
    assert "test/matched/qwk" in summary(runs["matched"])["test"]
    assert "quantum-vs-matched" in summary(runs["matched"])["test_paired"]
