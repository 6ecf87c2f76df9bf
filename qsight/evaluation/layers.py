"""Which layer Grad-CAM looks at, and how its output becomes a (B, C, H, W) map.

Automatic choice, on the model's ``backbone.net`` when it has one (else the model):

* ViT-style token models (``blocks`` + ``patch_embed``): ``blocks[-1].norm1``. The
  output of the last block itself would not do: with class-token pooling its patch
  tokens never reach the logits, so their gradients are zero. Prefix (class,
  distillation, register) tokens are dropped and the rest laid out on the patch grid.
* timm models describing their stages (``feature_info``): a stage, e.g. ``layer2`` …
  ``layer4`` (ResNet), ``blocks.6`` (EfficientNet), ``stages.3`` (ConvNeXt),
  ``layers.3`` (Swin, channels-last output, permuted to channels-first).
* Anything else: an ``nn.Conv2d``.

Among the candidate stages (or convolutions) the deepest one is taken whose map, at the
given input size, is at least ``min_size`` cells on each side (the input size is known
from one probe forward pass in eval mode, no gradient). A map of 2×2 cells can only point
at an image quadrant, and a 1×1 map at nothing; when no candidate reaches ``min_size``,
the one with the largest map is taken. Without an input size, the deepest candidate.

An explicit dotted path is looked up on the model first, then on ``backbone.net``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ReshapeTransform = Callable[[Tensor], Tensor]

#: The smallest map side the automatic choice aims for (Grad-CAM's usual 7×7 at 224 px).
MIN_MAP_SIZE = 7


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


def resolve_target_layer(
    model: nn.Module,
    path: str | None = None,
    *,
    input_size: tuple[int, int] | None = None,
    min_size: int = MIN_MAP_SIZE,
) -> TargetLayer:
    """The Grad-CAM target layer of ``model``: at the dotted ``path``, or chosen (see the module docstring)."""
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
    candidates = _feature_stages(net) or _convs(net)
    if not candidates:
        raise TargetLayerError(f"no convolution in {type(net).__name__}; name a target layer in the spec")
    name = candidates[-1]
    if input_size is not None and len(candidates) > 1:
        name = choose_by_size(map_sizes(model, net, candidates, reshape, input_size), min_size)
    return TargetLayer(net.get_submodule(name), prefix + name, reshape)


def choose_by_size(sizes: dict[str, tuple[int, int]], min_size: int = MIN_MAP_SIZE) -> str:
    """The last name (deepest) whose map is at least ``min_size`` a side, else the one with the largest map."""
    if not sizes:
        raise ValueError("no candidate layers")
    fine = [name for name, (h, w) in sizes.items() if min(h, w) >= min_size]
    if fine:
        return fine[-1]
    names = list(sizes)
    return max(reversed(names), key=lambda n: min(sizes[n]))  # ties: the deepest


def map_sizes(
    model: nn.Module, net: nn.Module, names: list[str], reshape: ReshapeTransform, input_size: tuple[int, int]
) -> dict[str, tuple[int, int]]:
    """(height, width) of each named module's map for one input of ``input_size``, by a probe forward."""
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, Tensor) and output.ndim >= 3:
                shape = reshape(output).shape
                sizes[name] = (int(shape[-2]), int(shape[-1]))

        return hook

    handles = [net.get_submodule(n).register_forward_hook(record(n)) for n in names]
    param = next(model.parameters(), None)
    probe = torch.zeros(1, 3, *input_size, device=param.device if param is not None else None)
    try:
        with eval_mode(model), torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return {n: sizes[n] for n in names if n in sizes}


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` for the block; every module's training flag restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


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


def _feature_stages(net: nn.Module) -> list[str]:
    """The modules timm's ``feature_info`` names, shallow to deep, that exist in ``net``."""
    info = getattr(net, "feature_info", None)
    names: list[str] = []
    for entry in info or []:
        name = entry.get("module") if isinstance(entry, dict) else None
        if isinstance(name, str) and name and _exists(net, name):
            names.append(name)
    return names


def _exists(net: nn.Module, name: str) -> bool:
    try:
        net.get_submodule(name)
    except AttributeError:
        return False
    return True


def _convs(net: nn.Module) -> list[str]:
    return [str(name) for name, module in net.named_modules() if isinstance(module, nn.Conv2d)]
