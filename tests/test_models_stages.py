"""Stage semantics of HybridModel: bit identity of frozen parts, masking, transitions."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qsight.config.spec import ModelSpec, StageConfig, ensure_ready
from qsight.errors import BadInputError
from qsight.models import HybridModel, build_model

NUM_CLASSES = 5
ALL = ["backbone", "neck", "heads.lin", "heads.mlp", "combiner"]


def make_model(combiner: str = "gated", seed: int = 0) -> HybridModel:
    ensure_ready()
    spec = ModelSpec.model_validate(
        {
            "backbone": {"type": "tiny-cnn", "width": 4, "depth": 2},
            "neck": {"dim": 4, "hidden": 6, "dropout": 0.1},
            "heads": {
                "lin": {"type": "linear", "input": "backbone", "dropout": 0.2},
                "mlp": {"type": "mlp", "input": "neck", "hidden": 8},
            },
            "combiner": {"type": combiner},
        }
    )
    torch.manual_seed(seed)
    return build_model(spec, NUM_CLASSES)


def stage(heads: list[str], train: list[str], **kw: Any) -> StageConfig:
    return StageConfig(name="s", epochs=1, heads=tuple(heads), train=tuple(train), **kw)


def batch(i: int = 0, n: int = 8) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_steps(model: HybridModel, steps: int = 3) -> None:
    """Real AdamW steps with weight decay over *all* parameters (the harshest case)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    model.train()
    for i in range(steps):
        x, y = batch(i)
        total, _ = model.loss(model(x), y)
        opt.zero_grad()
        total.backward()
        opt.step()


def owner(key: str) -> str:
    """The stage module name a state_dict key belongs to."""
    if key.startswith("heads."):
        return ".".join(key.split(".")[:2])
    return key.split(".")[0]


def expected_to_change(key: str, heads: list[str], train: list[str], model: HybridModel) -> bool:
    name = owner(key)
    if name not in train:
        return False
    if name == "combiner":
        return len(heads) > 1 and key.split(".")[-1] in heads
    if name.startswith("heads."):
        return name[len("heads.") :] in heads
    if name == "neck":
        return any(model.head_inputs[h] == "neck" for h in heads)
    return True


STAGES = {
    "head-linear": (["lin"], ["heads.lin"]),
    "head-mlp": (["mlp"], ["heads.mlp"]),
    "head-mlp-beside-frozen-linear": (["lin", "mlp"], ["heads.mlp"]),
    "neck": (["mlp"], ["neck"]),
    "backbone": (["lin"], ["backbone"]),
    "combiner": (["lin", "mlp"], ["combiner"]),
    "inactive-head-in-train": (["lin"], ["heads.lin", "heads.mlp", "neck"]),
    "everything": (["lin", "mlp"], ALL),
}


@pytest.mark.parametrize("case", list(STAGES))
def test_frozen_parameters_and_buffers_stay_bit_identical(case: str) -> None:
    heads, train = STAGES[case]
    model = make_model()
    model.set_stage(stage(heads, train))
    before = snapshot(model)
    run_steps(model)
    after = model.state_dict()
    for key, old in before.items():
        changed = not torch.equal(old, after[key])
        assert changed == expected_to_change(key, heads, train, model), key


@pytest.mark.parametrize("case", list(STAGES))
def test_requires_grad_modes_and_trainable_parameters(case: str) -> None:
    heads, train = STAGES[case]
    model = make_model()
    model.set_stage(stage(heads, train))
    model.train()
    for name in model.module_names():
        module = model.get_module(name)
        assert all(p.requires_grad == (name in train) for p in module.parameters()), name
        if name not in train:
            assert not any(m.training for m in module.modules()), f"{name} must stay in eval mode"
    x, y = batch()
    model.loss(model(x), y)[0].backward()
    with_grad = {id(p) for p in model.parameters() if p.grad is not None}
    assert with_grad == {id(p) for p in model.trainable_parameters()}
    assert model.has_unused_trainable() == (case == "inactive-head-in-train")


def test_stage_transitions_reapply_everything() -> None:
    model = make_model()
    a = stage(["lin", "mlp"], ALL)
    b = stage(["mlp"], ["heads.mlp"], loss_weights={"mlp": 2.0})

    def state() -> tuple[object, ...]:
        model.train()
        grads = tuple(p.requires_grad for p in model.parameters())
        modes = tuple(m.training for m in model.modules())
        params = tuple(id(p) for p in model.trainable_parameters())
        return grads, modes, params, model.active_heads, model.loss_weights, model.frozen_upstream()

    model.set_stage(a)
    first = state()
    model.set_stage(b)
    middle = state()
    assert middle != first and middle[3] == ("mlp",) and middle[4] == {"mlp": 2.0} and middle[5]
    before_b = snapshot(model)
    run_steps(model)
    for key, old in before_b.items():
        assert torch.equal(old, model.state_dict()[key]) == (owner(key) != "heads.mlp"), key
    model.set_stage(a)
    assert state() == first
    model.set_stage(a)  # idempotent
    assert state() == first
    before_a = snapshot(model)
    run_steps(model)
    assert all(not torch.equal(v, model.state_dict()[k]) for k, v in before_a.items() if "gates" not in k)


def test_eval_then_train_keeps_frozen_modules_in_eval() -> None:
    model = make_model()
    model.set_stage(stage(["lin"], ["heads.lin"]))
    model.eval()
    model.train()
    assert model.heads["lin"].training and not model.backbone.training and not model.neck.training  # type: ignore[union-attr]
    assert not model.heads["mlp"].training and not model.combiner.training


def test_inactive_head_is_not_run_and_changes_nothing() -> None:
    model = make_model().eval()
    model.set_stage(stage(["lin"], ["heads.lin", "heads.mlp"], loss_weights={"lin": 0.5}))
    model.eval()
    calls: list[int] = []
    model.heads["mlp"].register_forward_hook(lambda *_: calls.append(1))
    x, y = batch()
    out = model(x)
    total, logged = model.loss(out, y)
    assert calls == [] and list(out.heads) == ["lin"]
    assert torch.allclose(out.ensemble, torch.log_softmax(out.heads["lin"], dim=-1), atol=1e-6)
    assert torch.allclose(total, 0.5 * F.cross_entropy(out.heads["lin"], y))
    with torch.no_grad():
        for p in model.heads["mlp"].parameters():
            p.add_(1.0)
        model.combiner.gates["mlp"].fill_(5.0)  # type: ignore[index]
    out2 = model(x)
    total2, logged2 = model.loss(out2, y)
    assert torch.equal(out.ensemble, out2.ensemble) and torch.equal(total, total2)
    assert logged.keys() == {"lin", "ensemble"} and torch.equal(logged["ensemble"], logged2["ensemble"])
    total2.backward()
    assert all(p.grad is None for p in model.heads["mlp"].parameters())
    assert model.combiner.gates["mlp"].grad is None  # type: ignore[index]


def test_gated_ensemble_uses_active_gates_only() -> None:
    model = make_model().eval()
    with torch.no_grad():
        model.combiner.gates["lin"].fill_(0.3)  # type: ignore[index]
        model.combiner.gates["mlp"].fill_(-1.0)  # type: ignore[index]
    x, _ = batch()
    out = model(x)
    w = torch.softmax(torch.tensor([0.3, -1.0]), dim=0)
    probs = w[0] * out.heads["lin"].softmax(-1) + w[1] * out.heads["mlp"].softmax(-1)
    assert torch.allclose(out.ensemble, probs.log(), atol=1e-6)
    assert model.combiner_weights() == pytest.approx({"lin": float(w[0]), "mlp": float(w[1])})


def test_mean_combiner_is_mean_of_probabilities() -> None:
    model = make_model("mean").eval()
    out = model(batch()[0])
    probs = (out.heads["lin"].softmax(-1) + out.heads["mlp"].softmax(-1)) / 2
    assert torch.allclose(out.ensemble, probs.log(), atol=1e-6)
    assert list(model.combiner.parameters()) == []


def test_ensemble_loss_trains_gates_only() -> None:
    """With the combiner in train, the ensemble NLL is added but heads get only their own gradient."""
    x, y = batch()
    grads = {}
    for train in (["heads.lin", "heads.mlp"], ["heads.lin", "heads.mlp", "combiner"]):
        model = make_model().eval()
        model.set_stage(stage(["lin", "mlp"], train))
        model.eval()
        out = model(x)
        total, logged = model.loss(out, y)
        if "combiner" in train:
            assert model.combiner_trains()
            assert torch.allclose(total, logged["lin"] + logged["mlp"] + logged["ensemble"])
            assert all(g.grad is None for g in model.combiner.parameters())
        total.backward()
        grads[len(train)] = [p.grad.clone() for p in model.heads.parameters()]  # type: ignore[union-attr]
    assert all(torch.equal(a, b) for a, b in zip(grads[2], grads[3], strict=True))


def test_forward_equals_forward_features_of_features() -> None:
    model = make_model()
    x, _ = batch()
    for mode in (False, True):
        model.train(mode)
        torch.manual_seed(1)
        direct = model(x)
        torch.manual_seed(1)
        feats = model.features(x)
        staged = model.forward_features(feats)
        assert set(feats) == {"backbone", "neck"}
        assert direct.heads.keys() == staged.heads.keys()
        assert all(torch.equal(direct.heads[h], staged.heads[h]) for h in direct.heads)
        assert torch.equal(direct.ensemble, staged.ensemble)
    model.eval()
    only_backbone = model.forward_features({"backbone": model.features(x)["backbone"]})
    assert torch.equal(only_backbone.ensemble, model(x).ensemble)


@pytest.mark.parametrize(
    ("heads", "train", "frozen"),
    [
        (["mlp"], ["heads.mlp"], True),
        (["mlp"], ["neck", "heads.mlp"], False),
        (["lin"], ["neck", "heads.lin"], True),
        (["lin"], ["backbone"], False),
        (["lin", "mlp"], ["combiner"], True),
    ],
)
def test_frozen_upstream(heads: list[str], train: list[str], frozen: bool) -> None:
    model = make_model()
    st = stage(heads, train)
    assert model.frozen_upstream(st) is frozen
    model.set_stage(st)
    assert model.frozen_upstream() is frozen


def test_bad_names_are_bad_input() -> None:
    model = make_model()
    with pytest.raises(BadInputError, match=r"did you mean 'heads\.mlp'"):
        model.set_stage(stage(["mlp"], ["heads.mpl"]))
    with pytest.raises(BadInputError, match="unknown head 'glob'"):
        model.set_active(["glob"])
    assert model.active_heads == ("lin", "mlp")  # a failed call changes nothing


class _AnnealHead(nn.Linear):
    def set_anneal(self, temperature: float, noise: float) -> None:
        self.anneal = (temperature, noise)


def test_set_anneal_reaches_heads_that_have_it() -> None:
    from qsight.models import Backbone, MeanCombiner, TinyCnn

    net = TinyCnn(4, 1)
    head = _AnnealHead(4, 3)
    model = HybridModel(
        Backbone(net, 4),
        {"q": head, "c": nn.Linear(4, 3)},
        {"q": "backbone", "c": "backbone"},
        MeanCombiner(),
    )
    assert model.set_anneal(2.5, 0.2) == ["q"] and head.anneal == (2.5, 0.2)
    assert model.module_names() == ["backbone", "heads.q", "heads.c", "combiner"]
    assert set(model.features(torch.randn(2, 3, 8, 8))) == {"backbone"}
