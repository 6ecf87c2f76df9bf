"""Trainer parts in isolation: parallel decisions, batch sharding, schedules, run state."""

from __future__ import annotations

import pytest
import torch

from qsight.config.spec import StageConfig
from qsight.training.optim import lr_factor
from qsight.training.parallel import ShardedBatchSampler, use_data_parallel
from qsight.training.state import EarlyStopping, RunState


def stage(**kw: object) -> StageConfig:
    base: dict[str, object] = {"name": "s", "epochs": 2, "heads": ["quantum"], "train": ["heads.quantum"]}
    return StageConfig.model_validate({**base, **kw})


@pytest.mark.parametrize(
    ("kw", "gpus", "expected"),
    [
        ({}, 4, False),  # failure 1: only the quantum head trains -> never replicate it
        ({"data_parallel": "auto", "train": ["backbone", "heads.quantum"]}, 2, True),
        ({"data_parallel": "auto", "train": ["backbone"]}, 1, False),
        ({"data_parallel": "auto", "train": ["backbone"]}, 0, False),
        ({"data_parallel": "never", "train": ["backbone"]}, 8, False),
        ({"data_parallel": "force"}, 1, True),
        ({"data_parallel": "force"}, 0, False),
    ],
)
def test_data_parallel_decision(kw: dict[str, object], gpus: int, expected: bool) -> None:
    assert use_data_parallel(stage(**kw), ["quantum"], gpus) is expected


def test_sharded_batches_recombine_into_the_single_process_batches() -> None:
    single = list(ShardedBatchSampler(50, 8, seed=3, shuffle=True, drop_last=True))
    shards = [list(ShardedBatchSampler(50, 8, seed=3, shuffle=True, rank=r, world_size=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*shards, strict=True)] == single
    assert len(single) == 6 and all(len(b) == 8 for b in single)
    again = list(ShardedBatchSampler(50, 8, seed=3, shuffle=True, drop_last=True))
    other = list(ShardedBatchSampler(50, 8, seed=4, shuffle=True, drop_last=True))
    assert again == single and other != single
    with pytest.raises(ValueError, match="not divisible"):
        ShardedBatchSampler(50, 7, seed=0, shuffle=True, world_size=2)


def test_weighted_sampler_draws_rare_classes_more_often() -> None:
    weights = [1.0] * 90 + [9.0] * 10  # the last 10 samples are a rare class
    drawn = [i for b in ShardedBatchSampler(100, 10, seed=0, shuffle=True, weights=weights) for i in b]
    rare = sum(i >= 90 for i in drawn) / len(drawn)
    assert 0.35 < rare < 0.65


def test_warmup_then_cosine_schedule() -> None:
    s = stage(warmup_epochs=1.0, scheduler="cosine")
    factors = [lr_factor(s, i, total_steps=20, steps_per_epoch=10) for i in range(20)]
    assert factors[0] < factors[5] < factors[9] <= 1.0  # warm-up rises
    assert factors[10] == pytest.approx(1.0) and factors[19] < 0.05  # cosine falls to ~0
    const = stage(scheduler="constant")
    assert {lr_factor(const, i, 20, 10) for i in range(20)} == {1.0}


def test_early_stopping_and_run_state_round_trip() -> None:
    early = EarlyStopping(patience=2, mode="max")
    assert [early.update(v) for v in (0.5, 0.6, 0.6, 0.55)] == [True, True, False, False]
    assert early.stopped and EarlyStopping.from_dict(early.to_dict()) == early
    low = EarlyStopping(patience=None, mode="min")
    assert low.update(1.0) and low.update(0.5) and not low.update(0.7) and not low.stopped
    state = RunState()
    state.record_epoch("a", 0, {"val/ensemble/qwk": 0.4}, improved=True)
    state.epoch = 1
    state.stage_done("a", early_stopped=False)
    assert state.stage_index == 1 and state.epoch == 0 and state.best["epoch"] == 1
    assert RunState.from_dict(state.to_dict()) == state


def test_feature_cache_gives_the_heads_the_outputs_of_the_full_model() -> None:
    from qsight.config.spec import ModelSpec, ensure_ready
    from qsight.models import build_model
    from qsight.training.feature_cache import compute_features

    ensure_ready()
    spec = ModelSpec.model_validate({
        "backbone": {"type": "tiny-cnn", "width": 4, "depth": 2},
        "neck": {"dim": 3},
        "heads": {"g": {"type": "linear"}, "q": {"type": "quantum", "input": "neck", "qubits": 2, "reps": 1}},
    })
    torch.manual_seed(0)
    model = build_model(spec, num_classes=3).eval()
    images = torch.randn(10, 3, 16, 16)
    data = [(images[i], i % 3) for i in range(10)]
    cached = compute_features(model.features, data, batch_size=4, device=torch.device("cpu"))  # type: ignore[arg-type]
    feats, labels = cached.features, cached.labels
    with torch.no_grad():
        direct = model(images)
        via_cache = model.forward_features(feats)
    assert labels.tolist() == [i % 3 for i in range(10)]
    for head in ("g", "q"):
        assert torch.allclose(direct.heads[head], via_cache.heads[head], atol=1e-6)
    assert torch.allclose(direct.ensemble, via_cache.ensemble, atol=1e-6)
