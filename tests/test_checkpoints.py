"""The checkpoint format: written by a real Trainer, read with weights_only=True, checked, restored."""

from __future__ import annotations

import io
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from qsight.config import ExperimentSpec, load_spec
from qsight.errors import BadInputError
from qsight.experiment.build import build_data, build_hybrid
from qsight.models.backbones import tiny_cnn_backbone
from qsight.models.params import TinyCnnParams
from qsight.training.checkpoints import KEYS, CheckpointStore, TrainingParts, read_checkpoint
from qsight.training.reporting import EpochReporter
from qsight.training.seeding import rng_state, set_rng_state
from qsight.training.state import EarlyStopping, RunState
from qsight.training.trainer import Trainer
from tests.helpers import tiny_spec

CPU = torch.device("cpu")


@dataclass
class Trained:
    spec: ExperimentSpec
    num_classes: int
    store: CheckpointStore


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A tiny three-stage Trainer run in this process (no sinks), and its checkpoints."""
    tmp = tmp_path_factory.mktemp("ckpt")
    overrides = ["data.train_size=32", "data.val_size=16", "explain.enabled=false", "train.limit_batches=1"]
    spec = load_spec(tiny_spec(tmp), overrides)
    data = build_data(spec)
    model = build_hybrid(spec, data.num_classes, CPU)
    store = CheckpointStore(tmp / "run")
    reporter = EpochReporter(spec, data, model, None, tmp / "run", CPU)
    Trainer(spec, data, model, reporter, store, device=CPU).run()
    return Trained(spec, data.num_classes, store)


def test_a_trainer_checkpoint_holds_only_tensors_and_plain_values(trained: Trained) -> None:
    store = trained.store
    paths = [store.last, store.best, *(store.stage(s.name) for s in trained.spec.stages)]
    for path in paths:
        raw = torch.load(path, map_location="cpu", weights_only=True)  # refuses any pickled object
        assert set(raw) == set(KEYS), path
        assert isinstance(raw["rng"]["numpy"]["keys"], torch.Tensor)
    last = store.read()
    assert last.stage == "ensemble" and last.epoch == 1 and last.run_state.finished is False
    assert [s["name"] for s in last.run_state.stages] == ["classical", "quantum"]
    assert store.read(store.stage("classical")).stage == "classical"


def test_restore_best_loads_the_best_weights_into_a_fresh_model(trained: Trained) -> None:
    fresh = build_hybrid(trained.spec, trained.num_classes, CPU)
    best = trained.store.restore_best(fresh)
    assert best.path == trained.store.best
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, best.model[key]), key


def test_a_backbone_loads_from_a_qsight_checkpoint(trained: Trained) -> None:
    store = trained.store
    backbone = tiny_cnn_backbone(TinyCnnParams(width=8, depth=2, checkpoint=str(store.best)))
    saved = store.read(store.best).model
    for key, value in backbone.net.state_dict().items():
        assert torch.equal(value, saved[f"backbone.net.{key}"]), key


def _parts() -> TrainingParts:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    return TrainingParts(model, optimizer, LambdaLR(optimizer, lambda step: 0.5**step), None,
                         EarlyStopping(patience=3))


def test_training_state_round_trips_and_restores(tmp_path: Path) -> None:
    parts = _parts()
    parts.model(torch.ones(4, 3)).sum().backward()
    parts.optimizer.step()
    parts.scheduler.step()
    parts.early.update(0.7)
    state = RunState(stage_index=1, epoch=2, global_step=9, last={"val/ensemble/qwk": 0.7})
    store = CheckpointStore(tmp_path)
    store.save(parts, state, "b", best=True, stage_end=True)
    assert store.best.is_file() and store.stage("b").is_file()
    back = store.read()
    assert back.run_state == state and (back.stage, back.epoch) == ("b", 2)
    other = _parts()
    back.restore_model(other.model)
    back.restore_training(other)
    assert other.early == parts.early
    assert other.scheduler.state_dict()["last_epoch"] == 1
    assert torch.equal(other.optimizer.state_dict()["state"][0]["exp_avg"],
                       parts.optimizer.state_dict()["state"][0]["exp_avg"])


def test_a_numpy_scalar_is_refused_when_writing_and_the_old_file_stays(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(_parts(), RunState(epoch=1), "a")
    bad = RunState(epoch=2, last={"val/ensemble/qwk": np.float64(0.5)})
    with pytest.raises(TypeError, match=r"run_state.*val/ensemble/qwk.*numpy"):
        store.save(_parts(), bad, "a")
    assert store.read().epoch == 1
    assert [p.name for p in store.folder.iterdir()] == ["last.pt"]  # no temporary left behind


def test_missing_key_corrupt_and_foreign_files_are_bad_input_naming_the_file(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(_parts(), RunState(), "a")
    raw = torch.load(store.last, weights_only=True)
    del raw["rng"]
    torch.save(raw, tmp_path / "no-rng.pt")
    with pytest.raises(BadInputError, match=r"no-rng\.pt: not a qsight checkpoint \(no 'rng'\)"):
        read_checkpoint(tmp_path / "no-rng.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match=r"bad\.pt: cannot read checkpoint"):
        read_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(BadInputError, match=re.escape(f"{tmp_path / 'none.pt'}: checkpoint not found")):
        read_checkpoint(tmp_path / "none.pt")
    raw["rng"], raw["format"] = {}, 99
    torch.save(raw, tmp_path / "future.pt")
    with pytest.raises(BadInputError, match=r"future\.pt: checkpoint format 99"):
        read_checkpoint(tmp_path / "future.pt")


class _MakeDir:
    """Unpickling this would create a folder: code run by opening a checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.makedirs, (str(self.path),))


def test_opening_a_checkpoint_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({k: _MakeDir(marker) for k in KEYS}, tmp_path / "evil.pt")
    with pytest.raises(BadInputError, match=r"evil\.pt: cannot read checkpoint"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def _draws() -> tuple[list[float], list[float], list[float]]:
    return ([random.random() for _ in range(3)] + [random.gauss(0, 1)],
            np.random.standard_normal(3).tolist() + np.random.rand(2).tolist(),
            torch.rand(3).tolist() + torch.randn(2).tolist())


def test_rng_state_survives_a_weights_only_round_trip_exactly() -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leave a cached gaussian in python's and numpy's state
    np.random.standard_normal(1)
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    expected = _draws()
    _draws()  # move every generator on
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True))
    assert _draws() == expected


def test_a_spec_edited_against_its_checkpoint_is_bad_input_naming_the_mismatch(trained: Trained) -> None:
    edited = trained.spec.model_copy(update={"model": trained.spec.model.model_copy(
        update={"neck": trained.spec.model.neck.model_copy(update={"dim": 6})})})  # type: ignore[union-attr]
    other = build_hybrid(edited, trained.num_classes, CPU)
    with pytest.raises(BadInputError) as info:
        trained.store.read().restore_model(other)
    message = str(info.value)
    assert "was spec.toml edited?" in message and "shape (checkpoint vs model)" in message
    assert "neck." in message and "(4," in message and "(6," in message
