"""Class balancing: one set of inverse-frequency weights for the loss and the sampler, used by the Trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qsight.config import load_spec
from qsight.data.balance import class_counts, class_weights, sample_weights
from qsight.experiment.build import build_data, build_hybrid
from qsight.training.checkpoints import CheckpointStore
from qsight.training.parallel import ShardedBatchSampler
from qsight.training.reporting import EpochReporter
from qsight.training.trainer import StagePlan, Trainer
from tests.helpers import tiny_spec


def test_class_weights_are_inverse_frequency_over_present_classes() -> None:
    labels = [0, 0, 0, 1, 2, 2]
    assert class_counts(labels, 4) == [3, 1, 2, 0]
    w = class_weights(labels, 4)
    assert w[0] * 3 == pytest.approx(w[1] * 1) == pytest.approx(w[2] * 2)  # equal total weight per class
    assert sum(w[y] for y in labels) / len(labels) == pytest.approx(1.0)  # mean 1 over the samples
    assert w[3] == 1.0  # absent: neutral, neither dropped (0) nor infinite
    assert class_weights([0, 1, 2, 0, 1, 2], 3) == pytest.approx([1.0, 1.0, 1.0])
    assert sample_weights(labels, 4) == [w[y] for y in labels]


def test_sample_weights_draw_every_class_equally_often() -> None:
    labels = [0] * 90 + [1] * 10
    sampler = ShardedBatchSampler(len(labels), 10, seed=0, shuffle=True, weights=sample_weights(labels, 2))
    drawn = [labels[i] for _ in range(5) for batch in sampler for i in batch]
    assert 0.4 < sum(drawn) / len(drawn) < 0.6


def test_the_trainer_weights_its_loss_and_sampler_with_them(tmp_path: Path) -> None:
    spec = load_spec(tiny_spec(tmp_path), ["data.train_size=32", "data.val_size=16", "data.weighted_sampler=true",
                                           "train.class_weighted_loss=true"])
    data = build_data(spec)
    model = build_hybrid(spec, data.num_classes, torch.device("cpu"))
    reporter = EpochReporter(spec, data, model, None, tmp_path, torch.device("cpu"))
    trainer = Trainer(spec, data, model, reporter, CheckpointStore(tmp_path), device=torch.device("cpu"))
    labels = list(data.train_labels)
    assert trainer.class_weights is not None
    assert trainer.class_weights.tolist() == pytest.approx(class_weights(labels, data.num_classes))
    plan = StagePlan(spec.stages[0], 0, False, False, data.train, data.val)
    weights = trainer._train_sampler(plan, epoch=0).weights
    assert weights is not None
    assert weights.tolist() == pytest.approx(sample_weights(labels, data.num_classes))
