"""Grad-CAM that localises: layer choice by map size, blank maps, chance level, known answers, gradient-free heads."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import Tensor, nn

from qsight.evaluation import explain, resolve_target_layer, score_explanations, score_pointing
from qsight.evaluation.cams import NO_GRADIENT, NO_OUTPUT, cam_batch, cam_mode, normalise
from qsight.evaluation.layers import choose_by_size
from qsight.evaluation.pointing import PointingScore, hit_region
from qsight.models.output import ModelOutput
from tests.helpers import cli, summary, tiny_spec


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Backbone(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # type: ignore[no-any-return]


class Wrapped(nn.Module):
    """backbone.net + one linear head, like a HybridModel."""

    def __init__(self, net: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone = Backbone(net)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: Tensor) -> ModelOutput:
        logits = self.head(self.backbone(x))
        return ModelOutput(heads={"global": logits}, ensemble=logits.log_softmax(dim=1))


def resnet() -> Wrapped:
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    return Wrapped(net, int(net.num_features))


# -- the layer is chosen by the size of its map --------------------------------------------------------


@pytest.mark.parametrize(("size", "layer"), [(64, "layer2"), (32, "layer1"), (224, "layer4"), (128, "layer3")])
def test_layer_chosen_by_map_size(size: int, layer: str) -> None:
    model = resnet().train()
    before = model.backbone.net.bn1.running_mean.clone()
    chosen = resolve_target_layer(model, input_size=(size, size))
    assert chosen.path == f"backbone.net.{layer}"
    assert chosen.module is model.backbone.net.get_submodule(layer)
    assert model.training and model.backbone.net.bn1.training  # the probe changed no mode ...
    assert torch.equal(model.backbone.net.bn1.running_mean, before)  # ... nor any BatchNorm statistic
    assert resolve_target_layer(model).path == "backbone.net.layer4"  # no size: the deepest stage, as before
    assert resolve_target_layer(model, "layer3", input_size=(size, size)).path == "layer3"  # a named layer wins


def test_choose_by_size_rule() -> None:
    sizes = {"a": (32, 32), "b": (16, 16), "c": (8, 8), "d": (4, 4), "e": (2, 2)}
    assert choose_by_size(sizes) == "c"
    assert choose_by_size(sizes, min_size=9) == "b"
    assert choose_by_size({"x": (4, 6), "y": (2, 3), "z": (1, 1)}) == "x"  # none reaches 7: the largest map
    assert choose_by_size({"x": (4, 4), "y": (4, 4)}) == "y"  # equal maps: the deeper one


def test_plain_cnn_layer_by_size() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=4, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=4, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    assert resolve_target_layer(net, input_size=(32, 32)).path == "2"  # 8x8; the last conv is 2x2
    assert resolve_target_layer(net, input_size=(128, 128)).path == "4"  # 8x8 there
    assert resolve_target_layer(net).path == "4"


# -- blank maps and the chance level ---------------------------------------------------------------------


def masks_with_areas(size: int = 10) -> list[np.ndarray]:
    areas = [10, 30, 0, 50]  # pixels of 100; the third sample has no lesion
    found = []
    for area in areas:
        mask = np.zeros((size, size), dtype=bool)
        mask.flat[:area] = True  # the first rows
        found.append(mask)
    return found


def test_blank_maps_counted_and_excluded_and_chance_level() -> None:
    masks = masks_with_areas()
    cams = np.zeros((4, 10, 10), dtype=np.float32)
    cams[0, 0, 0] = 1.0  # on its lesion
    cams[1, 9, 9] = 1.0  # off its lesion
    cams[3] = 0.0  # blank: would "hit" pixel (0, 0) were it scored
    score = score_pointing(cams, masks, blank=[False, False, False, True])
    assert (score.hits, score.scored, score.blank) == (1, 2, 1)
    assert score.value == 0.5
    assert score.chance == pytest.approx((0.10 + 0.30) / 2)  # the scored samples only
    assert score.blank_fraction == pytest.approx(1 / 3)  # of the lesion-bearing samples
    assert score.metrics() == {
        "pointing_game": 0.5,
        "pointing_game_chance": pytest.approx(0.2),
        "pointing_game_shuffled": 0.5,  # sample 0's peak is on sample 1's lesion; 1's is not on 0's
        "pointing_game_n": 2.0,
        "gradcam_blank": pytest.approx(1 / 3),
    }
    pooled = score + PointingScore(3, 3, 0, 0.5, shuffled=0.5, shuffled_n=3)
    assert pooled.value == pytest.approx(4 / 5) and pooled.chance == pytest.approx((0.4 + 1.5) / 5)
    assert pooled.shuffled_value == pytest.approx((1.0 + 0.5) / 5)
    everything_blank = score_pointing(cams, masks, blank=[True] * 4)
    assert everything_blank.value is None
    assert everything_blank.metrics() == {"pointing_game_n": 0.0, "gradcam_blank": 1.0}


def test_shuffled_control_tells_a_fixed_peak_from_one_that_follows_the_lesion() -> None:
    """Lesions at random corners: maps peaking on their own lesion score 1 and about 1/4 shuffled;
    maps all peaking at one corner score as much on their own lesion as on the others'."""
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 4, size=24)
    masks, follows, fixed = [], np.zeros((24, 8, 8)), np.zeros((24, 8, 8))
    for i, c in enumerate(corners):
        r, col = divmod(int(c), 2)
        mask = np.zeros((8, 8), dtype=bool)
        mask[r * 4 : r * 4 + 4, col * 4 : col * 4 + 4] = True
        masks.append(mask)
        follows[i, r * 4 + 1, col * 4 + 1] = 1.0
        fixed[i, 1, 1] = 1.0
    on_lesion = score_pointing(follows, masks)
    assert on_lesion.value == 1.0
    share = np.mean([(corners[np.arange(24) != i] == c).mean() for i, c in enumerate(corners)])
    assert on_lesion.shuffled_value == pytest.approx(share) and share < 0.5
    at_one_place = score_pointing(fixed, masks)
    assert at_one_place.value == pytest.approx(np.mean(corners == 0))
    assert abs(at_one_place.value - at_one_place.shuffled_value) < 0.05


def test_flat_maps_are_blank() -> None:
    raw = torch.zeros(4, 2, 2)
    raw[1] = 3.0  # constant: points nowhere
    raw[2, 0, 1] = 1.0  # a real peak
    raw[3] = torch.tensor([[1.0, 1.0 + 1e-7], [1.0, 1.0]])  # rounding noise on a constant
    maps, blank = normalise(raw, (8, 8))
    assert blank.tolist() == [True, True, False, True]
    assert maps.shape == (4, 8, 8)
    assert not maps[blank].any()
    assert maps[2].max() == pytest.approx(1.0) and maps[2].min() == pytest.approx(0.0)
    single, flags = normalise(torch.rand(3, 1, 1) + 0.5, (8, 8))  # a 1x1 map
    assert flags.all() and not single.any()


def test_one_by_one_maps_blank_end_to_end(tmp_path: Path) -> None:
    """A stride-32 network at 32 px: every map is 1x1, so blank; drawn with a note, not scored as misses."""
    model = resnet().eval()
    images = torch.rand(3, 3, 32, 32)
    display = [np.full((32, 32, 3), 90, dtype=np.uint8)] * 3
    masks = masks_with_areas(32)[:3]
    result = explain(model, images, display, [0, 1, 2], ["global"], tmp_path, target_layer="layer4",
                     lesion_masks=masks)
    assert result.blank["global"].all()
    assert result.pointing_game == {"global": None}
    assert result.scores["global"].metrics() == {"pointing_game_n": 0.0, "gradcam_blank": 1.0}
    with Image.open(tmp_path / "sample00_overlay_global.png") as img:
        assert np.array_equal(np.asarray(img), display[0])  # the picture itself, no uniform wash
    report = score_explanations(model, images, [0, 1, 2], masks, ["global"], target_layer="layer4")
    assert report.metrics() == {"global/pointing_game_n": 0.0, "global/gradcam_blank": 1.0}


# -- a network with a known answer ------------------------------------------------------------------------


class RegionMean(nn.Module):
    """Logit of class 1 = mean of a fixed region of its (positive) feature map; class 0 = minus that."""

    def __init__(self, region: np.ndarray) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.register_buffer("region", torch.as_tensor(region, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        feats = torch.relu(self.conv(x))
        inside = (feats * self.region).sum(dim=(2, 3)).sum(dim=1) / self.region.sum()
        return torch.stack([-inside, inside], dim=1)


@pytest.mark.parametrize("method", ["layercam", "hirescam"])
def test_known_localisation(method: str, tmp_path: Path) -> None:
    region = np.zeros((32, 32), dtype=bool)
    region[20:28, 4:12] = True
    elsewhere = np.zeros_like(region)
    elsewhere[2:10, 20:30] = True
    torch.manual_seed(0)
    model = RegionMean(region)
    images = torch.rand(6, 3, 32, 32) + 0.5  # brightness everywhere: only the gradient says where
    labels = [1] * 6
    for tolerance in (0.0, 0.067):
        hit = score_explanations(model, images, labels, [region] * 6, ["ensemble"], method=method,
                                 tolerance=tolerance, batch_size=4)
        assert hit.scores["ensemble"].value == 1.0
        miss = score_explanations(model, images, labels, [elsewhere] * 6, ["ensemble"], method=method,
                                  tolerance=tolerance, batch_size=4)
        assert miss.scores["ensemble"].value == 0.0
        assert miss.metrics()["ensemble/pointing_game_n"] == 6.0
    assert hit.scores["ensemble"].chance == pytest.approx(hit_region(region, 0.067).mean())
    strict = score_explanations(model, images, labels, [region] * 6, ["ensemble"], method=method, tolerance=0.0)
    assert strict.scores["ensemble"].chance == pytest.approx(64 / 1024)


def test_tolerance_grows_the_hit_region_and_the_chance_level() -> None:
    mask = np.zeros((32, 32), dtype=bool)
    mask[10, 10] = True
    grown = hit_region(mask, 2 / 32)  # radius 2 px: the 13 pixels with dx² + dy² <= 4
    assert grown.sum() == 13 and grown[10, 12] and grown[12, 10] and not grown[12, 12]
    assert np.array_equal(hit_region(mask, 0.0), mask)
    cam = np.zeros((1, 32, 32), dtype=np.float32)
    cam[0, 11, 11] = 1.0  # 1.4 px off the lesion
    assert score_pointing(cam, [mask]).value == 0.0
    near = score_pointing(cam, [mask], tolerance=2 / 32)
    assert near.value == 1.0 and near.chance == pytest.approx(13 / 1024)


# -- heads without gradients -----------------------------------------------------------------------------


class NoGradient(torch.autograd.Function):
    """Like Aer with gradient = "none": a forward, and no gradient back."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:  # type: ignore[override]
        return x * 1.0

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> None:  # type: ignore[override]
        return None


class TwoHeads(Wrapped):
    def __init__(self, net: nn.Module, dim: int, *, only_quantum: bool = False) -> None:
        super().__init__(net, dim)
        self.quantum = nn.Linear(dim, 3)
        self.only_quantum = only_quantum

    def forward(self, x: Tensor) -> ModelOutput:
        feats = self.backbone(x)
        heads = {"quantum": self.quantum(NoGradient.apply(feats))}
        if not self.only_quantum:
            heads["global"] = self.head(feats)
        mean = torch.stack([h.softmax(dim=1) for h in heads.values()]).mean(dim=0)
        return ModelOutput(heads=heads, ensemble=mean.log())


def test_head_without_gradient_is_skipped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    images, display = torch.rand(2, 3, 64, 64), [np.zeros((64, 64, 3), np.uint8)] * 2
    with caplog.at_level(logging.INFO, logger="qsight.evaluation"):
        result = explain(TwoHeads(net, 512).eval(), images, display, [0, 1], ["quantum", "global", "ensemble"],
                         tmp_path / "a")
    assert result.targets == ["global", "ensemble"]  # the ensemble still has the global head's gradient
    assert result.skipped == {"quantum": NO_GRADIENT}
    assert any("skips quantum" in r.getMessage() for r in caplog.records)
    alone = TwoHeads(net, 512, only_quantum=True).eval()  # a stage whose only active head has no gradient
    with cam_mode(alone):
        maps = cam_batch(alone, images, resolve_target_layer(alone), ["quantum", "ensemble", "global"])
    assert maps.maps == {}
    assert maps.skipped == {"quantum": NO_GRADIENT, "ensemble": NO_GRADIENT, "global": NO_OUTPUT}


@pytest.mark.slow
def test_evaluation_only_aer_head_run_completes(tmp_path: Path) -> None:
    """A tiny run whose quantum head is Aer with gradient = "none": it trains nothing, Grad-CAM skips it."""
    aer = {"type": "aer", "shots": 64, "seed": 3, "gradient": "none"}
    spec = tiny_spec(
        tmp_path, model__heads__quantum__sampler=aer, data__val_size=24, data__train_size=32,
        stages__1__epochs=1, explain={"samples": 3, "pointing_samples": 6},
    )
    run_dir = tmp_path / "run"
    res = cli("run", str(spec), "--run-dir", str(run_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    assert summary(run_dir)["status"] == "completed"
    log_text = (run_dir / "run.log").read_text()
    assert "Grad-CAM skips quantum: no gradient" in log_text
    assert "Grad-CAM skips ensemble: no gradient" in log_text  # the quantum stage's ensemble is the quantum head
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    by_stage = {line["stage"]: line for line in lines if "val/ensemble/qwk" in line}
    assert "val/quantum/pointing_game_n" not in by_stage["quantum"]
    final = by_stage["ensemble"]
    assert "val/quantum/pointing_game_n" not in final
    for head in ("global", "compressed", "ensemble"):
        assert final[f"val/{head}/pointing_game_n"] + final[f"val/{head}/gradcam_blank"] * 6 >= 6 - 1e-9
        assert 0.0 < final[f"val/{head}/pointing_game_chance"] < 1.0
    assert (run_dir / "visualizations" / "quantum" / "epoch_01" / "gradcam" / "collage.png").is_file()
