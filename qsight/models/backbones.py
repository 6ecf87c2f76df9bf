"""Backbones: images (B, 3, H, W) → pooled features (B, feature_dim)."""

from __future__ import annotations

import difflib
from typing import Any

from torch import Tensor, nn

from qsight.errors import BadInputError
from qsight.models.params import TimmBackboneParams, TinyCnnParams
from qsight.models.weights import hub_offline_unless_reachable, load_checkpoint


class Backbone(nn.Module):
    """A feature extractor: `net` maps images to pooled features of width `feature_dim`.

    `net` is the underlying timm model or CNN (Grad-CAM picks its target layer there).
    """

    def __init__(self, net: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.net = net
        self.feature_dim = int(feature_dim)

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.net(images)
        return out


class TinyCnn(nn.Module):
    """conv-bn-relu blocks (stride 2 after the first), then global average pooling."""

    def __init__(self, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels_in = 3
        for i in range(depth):
            channels_out = width * 2**i
            blocks.append(_conv_block(channels_in, channels_out, stride=1 if i == 0 else 2))
            channels_in = channels_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.num_features = channels_in

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.pool(self.features(images))
        return out


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def tiny_cnn_backbone(params: TinyCnnParams) -> Backbone:
    """Build the tiny CNN, loading `params.checkpoint` when given."""
    net = TinyCnn(params.width, params.depth)
    if params.checkpoint:
        load_checkpoint(net, params.checkpoint, "tiny-cnn backbone")
    return Backbone(net, net.num_features)


def timm_backbone(params: TimmBackboneParams) -> Backbone:
    """Any timm model without its classifier (pooled pre-logits features)."""
    import timm

    what = f"timm backbone {params.name!r}"
    if not timm.is_model(params.name):
        close = difflib.get_close_matches(params.name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise BadInputError(f"unknown timm model {params.name!r}{hint}")
    net = _create(params, what)
    if params.checkpoint:
        load_checkpoint(net, params.checkpoint, what)
    dim: Any = getattr(net, "head_hidden_size", None) or getattr(net, "num_features", 0)
    return Backbone(net, int(dim))


def _create(params: TimmBackboneParams, what: str) -> nn.Module:
    """timm.create_model with errors turned into `BadInputError`s naming the model."""
    import timm

    kwargs: dict[str, Any] = dict(params.kwargs)
    try:
        if not params.pretrained:
            return timm.create_model(params.name, num_classes=0, drop_rate=params.drop_rate, **kwargs)
        with hub_offline_unless_reachable():
            return timm.create_model(
                params.name, pretrained=True, num_classes=0, drop_rate=params.drop_rate, **kwargs
            )
    except TypeError as exc:
        raise BadInputError(f"{what}: bad keyword arguments {sorted(kwargs)}: {exc}") from None
    except Exception as exc:  # hub, download, cache or timm errors
        if not params.pretrained:
            raise
        raise BadInputError(
            f"{what}: pretrained weights could not be loaded ({type(exc).__name__}: {exc}); "
            "set pretrained = false, or give a local `checkpoint` file"
        ) from None
