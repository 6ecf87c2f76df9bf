"""Grad-CAM end to end on small timm backbones and on a hand-made CNN with a known answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import Tensor, nn

from qsight.evaluation import TargetLayerError, explain, pointing_game, resolve_target_layer
from qsight.evaluation.gradcam import cam_mode, compute_cams
from qsight.models.output import ModelOutput

SIZE = 64
CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run far faster single-threaded on a shared, oversubscribed CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Backbone(nn.Module):
    def __init__(self, net: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.net = net
        self.feature_dim = feature_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # type: ignore[no-any-return]


class Hybrid(nn.Module):
    """A stand-in HybridModel: backbone, linear heads, mean-of-probabilities ensemble."""

    def __init__(self, net: nn.Module, feature_dim: int, heads: tuple[str, ...] = ("global", "quantum")) -> None:
        super().__init__()
        self.backbone = Backbone(net, feature_dim)
        self.heads = nn.ModuleDict({h: nn.Linear(feature_dim, CLASSES) for h in heads})
        self.active = list(heads)

    def forward(self, x: Tensor) -> ModelOutput:
        features = self.backbone(x)
        logits = {h: self.heads[h](features) for h in self.active}
        probs = torch.stack([t.softmax(dim=1) for t in logits.values()]).mean(dim=0)
        return ModelOutput(heads=logits, ensemble=probs.log())


def timm_hybrid(name: str, heads: tuple[str, ...] = ("global", "quantum"), **kwargs: object) -> Hybrid:
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    return Hybrid(net, int(net.num_features), heads).eval()


def batch(n: int = 3, size: int = SIZE) -> tuple[Tensor, list[np.ndarray]]:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(n, 3, size, size, generator=gen)
    display = [(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for img in images]
    return (images - 0.5) / 0.25, display


def hooked(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


BACKBONES = [  # at 64 px the deepest stage whose map is at least 7x7 (here 8x8, stride 8)
    ("resnet18", {}, "backbone.net.layer2"),
    ("efficientnet_b0", {}, "backbone.net.blocks.2"),
    ("convnext_atto", {}, "backbone.net.stages.1"),
    ("vit_tiny_patch16_224", {"img_size": SIZE}, "backbone.net.blocks.11.norm1"),
    ("swin_tiny_patch4_window7_224", {"img_size": SIZE, "window_size": 2}, "backbone.net.layers.1"),
]


@pytest.mark.parametrize(("name", "kwargs", "layer"), BACKBONES, ids=[b[0] for b in BACKBONES])
def test_explain_timm_backbones(name: str, kwargs: dict[str, object], layer: str, tmp_path: Path) -> None:
    model = timm_hybrid(name, **kwargs)
    images, display = batch()
    result = explain(model, images, display, [0, 1, 2], ["ensemble", "global"], tmp_path)
    assert result.layer == layer
    assert result.targets == ["ensemble", "global"]
    assert not hooked(model)
    for target, cams in result.cams.items():
        assert cams.shape == (3, SIZE, SIZE)
        assert np.isfinite(cams).all()
        spread = cams.reshape(3, -1).std(axis=1)
        assert (spread > 1e-3).sum() >= 2, f"{target}: CAM rendered (almost) nothing: {spread}"
    files = [*result.originals, *(p for paths in result.overlays.values() for p in paths), result.collage]
    assert len(files) == 3 + 2 * 3 + 1
    for path in files:
        with Image.open(path) as img:
            img.verify()
    assert (tmp_path / "sample01_overlay_global.png").exists()
    assert (tmp_path / "sample02_original.png").exists()
    assert result.pointing_game == {"ensemble": None, "global": None}
    assert result.metrics() == {}


def test_target_classes_give_different_maps() -> None:
    model = timm_hybrid("resnet18")
    images, _ = batch()
    layer = resolve_target_layer(model)
    with cam_mode(model):
        first = compute_cams(model, images, {"ensemble": [0, 0, 0]}, layer)["ensemble"]
        second = compute_cams(model, images, {"ensemble": [1, 1, 1]}, layer)["ensemble"]
    assert np.abs(first - second).max() > 0.05
    assert not hooked(model)


def test_frozen_backbone_explains_and_state_is_restored(tmp_path: Path) -> None:
    model = timm_hybrid("resnet18")
    model.backbone.requires_grad_(False)
    model.train()
    model.backbone.net.bn1.eval()  # a module deliberately left in eval mode
    sentinel = torch.full_like(model.heads["global"].weight, 7.0)
    model.heads["global"].weight.grad = sentinel
    images, display = batch()
    result = explain(model, images, display, [0, 1, 2], ["ensemble", "global"], tmp_path)
    assert result.cams["global"].reshape(3, -1).std(axis=1).max() > 1e-3
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    assert model.training and model.heads.training and not model.backbone.net.bn1.training
    assert model.heads["global"].weight.grad is sentinel
    assert all(p.grad is None for p in model.backbone.parameters())


def test_inactive_head_is_skipped_and_class_names_titles(tmp_path: Path) -> None:
    model = timm_hybrid("resnet18", heads=("global",))
    images, display = batch(2)
    result = explain(
        model,
        images,
        display,
        [0, 2],
        ["ensemble", "global", "quantum"],
        tmp_path,
        names=["img/a.png", "b"],
        class_names=["none", "mild", "severe"],
        class_source="predicted",
    )
    assert result.targets == ["ensemble", "global"]
    assert list(result.skipped) == ["quantum"]
    assert (tmp_path / "img_a.png_original.png").exists()
    assert [a.key for a in result.artifacts()] == ["gradcam/collage"]
    assert len(result.artifacts(per_sample=True)) == 1 + 2 + 2 * 2


def test_head_without_gradient_is_skipped(tmp_path: Path) -> None:
    class Detached(Hybrid):
        def forward(self, x: Tensor) -> ModelOutput:
            out = super().forward(x)
            out.heads["quantum"] = self.heads["quantum"](self.backbone(x).detach())  # like a gradient-free circuit
            return out

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    model = Detached(net, int(net.num_features)).eval()
    images, display = batch(2)
    result = explain(model, images, display, [0, 1], ["quantum", "global"], tmp_path)
    assert result.targets == ["global"]
    assert "no gradient" in result.skipped["quantum"]
    assert not hooked(model)


def test_hooks_and_state_released_on_error(tmp_path: Path) -> None:
    class Failing(Hybrid):
        calls = 0

        def forward(self, x: Tensor) -> ModelOutput:
            self.calls += 1
            if self.calls > 1:  # the probe forward passes, the first CAM forward fails
                raise RuntimeError("boom")
            return super().forward(x)

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    model = Failing(net, int(net.num_features)).train()
    images, display = batch(2)
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, images, display, [0, 1], ["ensemble"], tmp_path)
    assert not hooked(model)
    assert model.training
    assert all(p.requires_grad for p in model.parameters())


def test_target_layer_override_and_errors() -> None:
    model = timm_hybrid("resnet18")
    assert resolve_target_layer(model, "backbone.net.layer3").module is model.backbone.net.layer3
    assert resolve_target_layer(model, "layer2").module is model.backbone.net.layer2  # relative to the net
    with pytest.raises(TargetLayerError, match=r"backbone\.net\.layer9"):
        resolve_target_layer(model, "backbone.net.layer9")


def test_plain_cnn_uses_last_conv() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    layer = resolve_target_layer(net)
    assert layer.module is net[2] and layer.path == "2"
    assert resolve_target_layer(nn.DataParallel(net)).module is net[2]
    with pytest.raises(TargetLayerError, match="no convolution"):
        resolve_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))


def test_explain_refuses_inference_mode_and_mismatched_inputs(tmp_path: Path) -> None:
    images, display = batch(2)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        explain(RedSpot(), images, display, [0, 1], ["ensemble"], tmp_path)
    with pytest.raises(ValueError, match="2 images"):
        explain(RedSpot(), images, display, [0], ["ensemble"], tmp_path)


class RedSpot(nn.Module):
    """Class 0 score = mean red intensity: its Grad-CAM is the red channel itself."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_pointing_game_with_known_answer(tmp_path: Path) -> None:
    images = torch.zeros(2, 3, 32, 32)
    images[0, 0, 4:8, 20:24] = 1.0  # spot top right
    images[1, 0, 24:28, 2:6] = 1.0  # spot bottom left
    on_spot = np.zeros((2, 32, 32), dtype=bool)
    on_spot[0, 3:9, 19:25] = True
    on_spot[1, 23:29, 1:7] = True
    display = [np.zeros((32, 32, 3), dtype=np.uint8)] * 2
    model = RedSpot()
    hit = explain(model, images, display, [0, 0], ["ensemble"], tmp_path / "a", lesion_masks=list(on_spot))
    assert hit.pointing_game == {"ensemble": 1.0}
    assert hit.metrics() == {"ensemble/pointing_game": 1.0}
    swapped = [on_spot[1], on_spot[0]]
    miss = explain(model, images, display, [0, 0], ["ensemble"], tmp_path / "b", lesion_masks=swapped)
    assert miss.pointing_game == {"ensemble": 0.0}


def test_pointing_game_skips_samples_without_lesions() -> None:
    cams = np.zeros((3, 8, 8), dtype=np.float32)
    cams[:, 1, 1] = 1.0
    mask = np.zeros((8, 8), dtype=bool)
    mask[0:2, 0:2] = True
    empty = np.zeros((8, 8), dtype=bool)
    big = np.zeros((16, 16), dtype=bool)
    big[10:, 10:] = True  # other resolution: the CAM is resized to the mask first
    assert pointing_game(cams, [mask, empty, big]) == 0.5
    assert pointing_game(cams, [empty, None, empty]) is None


def test_overlay_is_pytorch_grad_cams_blend() -> None:
    """qsight draws overlays itself (importing pytorch-grad-cam cost every run 2-3 s): pixel for pixel
    its `show_cam_on_image`, for maps of any size (resized to the image) and values beyond [0, 1]."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from qsight.evaluation.render import fit_map, overlay

    rng = np.random.default_rng(1)
    for _ in range(20):
        size = int(rng.integers(8, 64))
        image = rng.integers(0, 256, size=(size, size, 3)).astype(np.uint8)
        cam = rng.random((int(rng.integers(2, size)),) * 2).astype(np.float32) * 1.2
        heat = np.clip(fit_map(cam, size, size), 0.0, 1.0)
        expected = show_cam_on_image(image.astype(np.float32) / 255.0, heat, use_rgb=True)
        assert np.array_equal(overlay(image, cam), expected)


def test_collage_marks_lesions_peaks_and_blank_maps(tmp_path: Path) -> None:
    from qsight.evaluation.render import CAPTION, GAP, PANEL, Panel, save_collage

    grey = np.full((32, 32, 3), 120, dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=bool)
    mask[4:10, 20:28] = True
    panels = [[Panel(grey, "lesion", mask=mask), Panel(grey, "peak", peak=(16, 8)),
               Panel(grey, "blank", note="blank map:\npoints nowhere")]]
    with Image.open(save_collage(panels, tmp_path / "c.png", title="t")) as img:
        rgb = np.asarray(img.convert("RGB")).astype(int)
    top = 24 + CAPTION

    def tile(col: int) -> np.ndarray:
        x = GAP + col * (PANEL + GAP)
        return rgb[top: top + PANEL, x: x + PANEL]

    lime = np.all(tile(0) == (0, 255, 0), axis=-1)
    ys, xs = np.nonzero(lime)
    scale = PANEL / 32
    assert lime.any() and abs(ys.min() - 4 * scale) <= 2 and abs(xs.max() - 28 * scale) <= 2  # the mask's outline
    white = np.all(tile(1) == 255, axis=-1)
    ys, xs = np.nonzero(white)
    assert abs(ys.mean() - 16.5 * scale) <= 2 and abs(xs.mean() - 8.5 * scale) <= 2  # the + on the peak
    band = tile(2)[PANEL // 2 - 15: PANEL // 2 + 15]
    assert (band < 120).mean() > 0.5 and (band == 255).any()  # a dark band with white text
    assert not np.all(tile(0) == tile(1))
