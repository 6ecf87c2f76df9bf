"""Which layer Grad-CAM looks at, and how its output becomes a (B, C, H, W) map.

Automatic choice, on the model's ``backbone.net`` when it has one (else the model):

* ViT-style token models (``blocks`` + ``patch_embed``): ``blocks[-1].norm1``. The
  output of the last block itself would not do: with class-token pooling its patch
  tokens never reach the logits, so their gradients are zero. Prefix (class,
  distillation, register) tokens are dropped and the rest laid out on the patch grid.
* timm models describing their stages (``feature_info``): the last stage, e.g.
  ``layer4`` (ResNet), ``blocks.6`` (EfficientNet), ``stages.3`` (ConvNeXt),
  ``layers.3`` (Swin, channels-last output, permuted to channels-first).
* Anything else: the last ``nn.Conv2d``.

An explicit dotted path is looked up on the model first, then on ``backbone.net``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

ReshapeTransform = Callable[[Tensor], Tensor]


class TargetLayerError(ValueError):
    """The target layer named in the spec does not exist, or none could be found."""


@dataclass(frozen=True)
class TargetLayer:
    """A module to hook, its dotted path and the transform of its output to (B, C, H, W)."""

    module: nn.Module
    path: str
    reshape: ReshapeTransform | None


@dataclass(frozen=True)
class ToFeatureMap:
    """Token sequences (B, T, D) or channels-last maps (B, H, W, C) to (B, C, H, W)."""

    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None
    channels_last: bool = False

    def __call__(self, tensor: Tensor) -> Tensor:
        if tensor.ndim == 3:
            return self._tokens(tensor)
        if tensor.ndim == 4 and self.channels_last:
            return tensor.permute(0, 3, 1, 2)
        return tensor

    def _tokens(self, tokens: Tensor) -> Tensor:
        patches = tokens[:, self.prefix_tokens :, :]
        count = patches.shape[1]
        if self.grid is not None and self.grid[0] * self.grid[1] == count:
            height, width = self.grid
        else:
            height = math.isqrt(count)
            if height * height != count:
                raise ValueError(f"cannot lay {count} patch tokens out on a grid")
            width = height
        return patches.reshape(patches.shape[0], height, width, patches.shape[2]).permute(0, 3, 1, 2)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DataParallel``/``DistributedDataParallel`` wrapper, else ``model``."""
    if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        return unwrap(model.module)
    return model


def network(model: nn.Module) -> nn.Module:
    """The underlying image network: ``model.backbone.net`` when present, else ``model``."""
    backbone = getattr(model, "backbone", None)
    net = getattr(backbone, "net", None)
    return net if isinstance(net, nn.Module) else model


def resolve_target_layer(model: nn.Module, path: str | None = None) -> TargetLayer:
    """The Grad-CAM target layer of ``model``: automatic, or at the dotted ``path``."""
    model = unwrap(model)
    net = network(model)
    reshape = feature_map_transform(net)
    if path:
        return TargetLayer(_lookup(model, net, path), path, reshape)
    prefix = "backbone.net." if net is not model else ""
    if _is_token_model(net):
        blocks = list(net.get_submodule("blocks").children())
        name = f"blocks.{len(blocks) - 1}" + (".norm1" if hasattr(blocks[-1], "norm1") else "")
        return TargetLayer(net.get_submodule(name), prefix + name, reshape)
    stage = _last_feature_stage(net)
    if stage is None:
        stage = _last_conv(net)
    return TargetLayer(net.get_submodule(stage), prefix + stage, reshape)


def feature_map_transform(net: nn.Module) -> ToFeatureMap:
    """The reshape transform fitting ``net``'s layer outputs."""
    grid = getattr(getattr(net, "patch_embed", None), "grid_size", None)
    return ToFeatureMap(
        prefix_tokens=int(getattr(net, "num_prefix_tokens", 1 if hasattr(net, "cls_token") else 0)),
        grid=(int(grid[0]), int(grid[1])) if grid is not None else None,
        channels_last=getattr(net, "output_fmt", "NCHW") == "NHWC",
    )


def _lookup(model: nn.Module, net: nn.Module, path: str) -> nn.Module:
    for root in (model, net):
        try:
            return root.get_submodule(path)
        except AttributeError:
            continue
    raise TargetLayerError(f"target layer {path!r} not found in {type(net).__name__}")


def _is_token_model(net: nn.Module) -> bool:
    blocks = getattr(net, "blocks", None)
    return hasattr(net, "patch_embed") and isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) > 0


def _last_feature_stage(net: nn.Module) -> str | None:
    info = getattr(net, "feature_info", None)
    if not info:
        return None
    last = info[-1]
    name = last.get("module") if isinstance(last, dict) else None
    if not isinstance(name, str) or not name:
        return None
    try:
        net.get_submodule(name)
    except AttributeError:
        return None
    return name


def _last_conv(net: nn.Module) -> str:
    convs = [name for name, module in net.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise TargetLayerError(f"no convolution in {type(net).__name__}; name a target layer in the spec")
    return str(convs[-1])
