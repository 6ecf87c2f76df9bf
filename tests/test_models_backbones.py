"""Backbones: feature dimensions, timm errors offline, local checkpoints."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from qsight.errors import BadInputError
from qsight.models.backbones import timm_backbone, tiny_cnn_backbone
from qsight.models.params import TimmBackboneParams, TinyCnnParams


def test_tiny_cnn_features() -> None:
    bb = tiny_cnn_backbone(TinyCnnParams(width=4, depth=3))
    assert bb.feature_dim == 16 and isinstance(bb.net, nn.Module)
    assert bb(torch.randn(2, 3, 32, 32)).shape == (2, 16)


@pytest.mark.parametrize(
    ("name", "kwargs", "dim"),
    [
        ("resnet18", {}, 512),
        ("efficientnet_b0", {}, 1280),
        ("vit_tiny_patch16_224", {"img_size": 32}, 192),
    ],
)
def test_timm_feature_dim(name: str, kwargs: dict[str, int], dim: int) -> None:
    bb = timm_backbone(TimmBackboneParams(name=name, kwargs=kwargs)).eval()
    assert bb.feature_dim == dim
    with torch.no_grad():
        assert bb(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_unknown_timm_model_suggests() -> None:
    with pytest.raises(BadInputError, match="did you mean 'resnet18'"):
        timm_backbone(TimmBackboneParams(name="resnet181"))


def test_bad_timm_kwargs_are_bad_input() -> None:
    with pytest.raises(BadInputError, match="resnet18"):
        timm_backbone(TimmBackboneParams(name="resnet18", kwargs={"no_such_option": 1}))


def test_pretrained_offline_fails_fast_and_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub

    from qsight.models import weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "hub_reachable", lambda: False)  # as here; also true on networked hosts
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))  # no cached weights to find
    offline_before = hub.HF_HUB_OFFLINE
    start = time.monotonic()
    with pytest.raises(BadInputError, match=r"timm backbone 'resnet18': pretrained weights"):
        timm_backbone(TimmBackboneParams(name="resnet18", pretrained=True))
    assert time.monotonic() - start < 20
    assert offline_before == hub.HF_HUB_OFFLINE and "HF_HUB_OFFLINE" not in os.environ  # restored


def test_hub_probe_is_bounded() -> None:
    from qsight.models.weights import hub_reachable

    start = time.monotonic()
    assert isinstance(hub_reachable(timeout=1.0), bool)
    assert time.monotonic() - start < 3


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = tiny_cnn_backbone(TinyCnnParams(width=4, depth=2))
    path = tmp_path / "cnn.pt"
    torch.save(src.net.state_dict(), path)
    dst = tiny_cnn_backbone(TinyCnnParams(width=4, depth=2, checkpoint=str(path)))
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_checkpoint_from_qsight_checkpoint_dict(tmp_path: Path) -> None:
    src = tiny_cnn_backbone(TinyCnnParams(width=4, depth=2))
    model = nn.ModuleDict({"backbone": src, "head": nn.Linear(8, 5)})
    path = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "stage": 0, "epoch": 1}, path)
    dst = tiny_cnn_backbone(TinyCnnParams(width=4, depth=2, checkpoint=str(path)))
    assert all(
        torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True)
    )


def test_timm_checkpoint_with_classifier_keys(tmp_path: Path) -> None:
    import timm

    full = timm.create_model("resnet18", num_classes=5)
    path = tmp_path / "r18.pt"
    torch.save(full.state_dict(), path)
    bb = timm_backbone(TimmBackboneParams(name="resnet18", checkpoint=str(path)))
    assert torch.equal(bb.net.state_dict()["conv1.weight"], full.state_dict()["conv1.weight"])


def test_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(BadInputError, match=re.escape(str(path))):
        tiny_cnn_backbone(TinyCnnParams(checkpoint=str(path)))
    with pytest.raises(BadInputError, match=re.escape(str(path))):
        timm_backbone(TimmBackboneParams(name="resnet18", checkpoint=str(path)))


def test_mismatched_checkpoints_are_bad_input(tmp_path: Path) -> None:
    wide, shallow, junk = tmp_path / "wide.pt", tmp_path / "shallow.pt", tmp_path / "junk.pt"
    torch.save(tiny_cnn_backbone(TinyCnnParams(width=8, depth=2)).net.state_dict(), wide)
    torch.save(tiny_cnn_backbone(TinyCnnParams(width=4, depth=1)).net.state_dict(), shallow)
    torch.save([1, 2, 3], junk)
    with pytest.raises(BadInputError, match="does not fit"):
        tiny_cnn_backbone(TinyCnnParams(width=4, depth=2, checkpoint=str(wide)))
    with pytest.raises(BadInputError, match="lacks"):
        tiny_cnn_backbone(TinyCnnParams(width=4, depth=2, checkpoint=str(shallow)))
    with pytest.raises(BadInputError, match="not a state_dict"):
        tiny_cnn_backbone(TinyCnnParams(width=4, depth=2, checkpoint=str(junk)))


def _backbone(**table: object) -> object:
    """A backbone's params as a spec validates them (registry ref included)."""
    from qsight.config.spec import validate_spec
    from tests.helpers import smoke_raw

    raw = smoke_raw()
    raw["model"]["backbone"] = table
    return validate_spec(raw).model.backbone


@pytest.mark.parametrize("cpu_limit", [30_000_000, 0])  # small backbones probe on the CPU, big ones on meta
def test_probe_gives_the_feature_width_and_draws_no_random_numbers(
    cpu_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qsight.models import probe

    monkeypatch.setattr(probe, "CPU_PROBE_PARAMS", cpu_limit)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    assert probe.probe_backbone(_backbone(type="timm", name="resnet18"), 64) == 512  # type: ignore[arg-type]
    assert probe.probe_backbone(_backbone(type="tiny-cnn", width=8, depth=2), 32) == 16  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), before)  # the run's seeded stream is untouched
    with pytest.raises(BadInputError, match="does not take 32×32 images"):
        probe.probe_backbone(_backbone(type="timm", name="deit_tiny_patch16_224"), 32)  # type: ignore[arg-type]
