"""Class activation maps of a batch, for every target at once (one forward pass).

A *target* is ``"ensemble"`` or a head name; its logits come from the model's
ModelOutput (a plain logits tensor counts as the ensemble). The target layer's output
is kept by a forward hook; each target's class score is differentiated with respect to
it (``torch.autograd.grad``, the graph kept between targets), so parameters never
receive gradients, and frozen ones explain as well as trainable ones.

Maps (:data:`CamMethod`):

* ``gradcam``: ReLU(Σ_k mean(∂y/∂A_k) · A_k), Selvaraju et al. (2017).
* ``layercam``: Σ_k ReLU(∂y/∂A_k) · A_k, per position, Jiang et al. (2021); keeps its
  resolution on the intermediate layers that a small input leaves enough cells.
* ``hirescam``: ReLU(Σ_k ∂y/∂A_k · A_k), per position, Draelos & Carin (2020).

A map with no spread (all zero after the ReLU, a 1×1 map, any constant) is *blank*: it
points nowhere and is returned as zeros with its flag set. Other maps are upsampled
(bilinear) to the input size and scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qsight.evaluation.layers import TargetLayer, eval_mode
from qsight.metric_names import ENSEMBLE

CamMethod = Literal["gradcam", "layercam", "hirescam"]
CAM_METHODS: tuple[CamMethod, ...] = ("gradcam", "layercam", "hirescam")
_FLAT = 1e-5  # a map whose spread is below this share of its largest magnitude is blank

NO_OUTPUT = "not in the model output (inactive head)"
NO_GRADIENT = "no gradient reaches the target layer (a head without gradients, e.g. Aer gradient = 'none')"


@dataclass
class CamBatch:
    """Maps of one batch: per explained target, (B, H, W) in [0, 1] at the input size."""

    maps: dict[str, np.ndarray] = field(default_factory=dict)
    blank: dict[str, np.ndarray] = field(default_factory=dict)  # target -> (B,) bool
    classes: dict[str, list[int]] = field(default_factory=dict)  # the class each map explains
    predicted: dict[str, list[int]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why it has no map


def select_output(output: object, target: str) -> Tensor:
    """The logits of ``target`` in a ModelOutput (or a plain logits tensor, as ``ensemble``)."""
    if isinstance(output, Tensor):
        found = output if target == ENSEMBLE else None
    elif target == ENSEMBLE:
        found = getattr(output, "ensemble", None)  # ModelOutput.ensemble
    else:
        heads = getattr(output, "heads", None)
        found = heads.get(target) if isinstance(heads, Mapping) else None
    if not isinstance(found, Tensor):
        raise KeyError(target)
    return found


@contextmanager
def cam_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, frozen parameters and grad enabled; everything restored on exit."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        with eval_mode(model):
            for p in params:
                p.requires_grad_(False)
            with torch.enable_grad():
                yield
    finally:
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad


def cam_batch(
    model: nn.Module,
    images: Tensor,
    layer: TargetLayer,
    targets: Sequence[str],
    classes: Mapping[str, Sequence[int]] | None = None,
    method: CamMethod = "layercam",
) -> CamBatch:
    """Maps of ``images`` for each target: for ``classes[target]`` when given, else its predicted class.

    Call inside :func:`cam_mode`. Targets the model does not output, or whose scores carry
    no gradient back to the layer, are left out with the reason in ``skipped``.
    """
    kept: list[Tensor] = []
    handle = layer.module.register_forward_hook(lambda _m, _i, out: kept.append(out))
    try:
        output = model(images.detach().requires_grad_(True))  # gradients flow from the input
    finally:
        handle.remove()
    if not kept or not all(isinstance(t, Tensor) for t in kept):
        raise RuntimeError(f"target layer {layer.path} did not run, or gave no tensor")
    result = CamBatch()
    size = (int(images.shape[-2]), int(images.shape[-1]))
    for target in targets:
        _one_target(result, output, kept, layer, target, (classes or {}).get(target), method, size)
    return result


def _one_target(
    result: CamBatch,
    output: object,
    activations: list[Tensor],
    layer: TargetLayer,
    target: str,
    chosen: Sequence[int] | None,
    method: CamMethod,
    size: tuple[int, int],
) -> None:
    try:
        logits = select_output(output, target)
    except KeyError:
        result.skipped[target] = NO_OUTPUT
        return
    predicted = logits.detach().argmax(dim=1)
    wanted = torch.as_tensor(list(chosen), device=logits.device) if chosen is not None else predicted
    raw = _layer_map(logits, wanted, activations, layer, method)
    if raw is None:
        result.skipped[target] = NO_GRADIENT
        return
    result.maps[target], result.blank[target] = normalise(raw, size)
    result.classes[target] = [int(c) for c in wanted.tolist()]
    result.predicted[target] = [int(c) for c in predicted.tolist()]


def _layer_map(
    logits: Tensor, wanted: Tensor, activations: list[Tensor], layer: TargetLayer, method: CamMethod
) -> Tensor | None:
    """The raw (B, h, w) map, summed over the layer's calls that the score depends on; None without gradient."""
    live = [a for a in activations if a.requires_grad]
    if not logits.requires_grad or not live:
        return None
    score = logits.gather(1, wanted.long().view(-1, 1)).sum()
    grads = torch.autograd.grad(score, live, retain_graph=True, allow_unused=True)
    reshape = layer.reshape or _same
    maps = [combine(reshape(a.detach()), reshape(g), method) for a, g in zip(live, grads, strict=True) if g is not None]
    return torch.stack(maps).sum(dim=0) if maps else None


def _same(tensor: Tensor) -> Tensor:
    return tensor


def combine(activation: Tensor, grad: Tensor, method: CamMethod) -> Tensor:
    """(B, C, h, w) activations and gradients → (B, h, w) raw map."""
    if method == "gradcam":
        return F.relu((grad.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1))
    if method == "layercam":
        return (F.relu(grad) * activation).sum(dim=1).clamp(min=0.0)
    if method == "hirescam":
        return F.relu((grad * activation).sum(dim=1))
    raise ValueError(f"unknown CAM method {method!r}; expected one of {CAM_METHODS}")


def normalise(raw: Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Blank flags of (B, h, w) maps, and the maps upsampled to ``size`` and scaled to [0, 1] (blank: zeros)."""
    flat = raw.detach().float().flatten(1)
    scale = flat.abs().amax(dim=1)
    spread = flat.amax(dim=1) - flat.amin(dim=1)
    blank = (scale == 0) | (spread <= _FLAT * scale) | ~torch.isfinite(scale)
    up = F.interpolate(raw.detach().float()[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.flatten(1).amin(dim=1).view(-1, 1, 1)
    high = up.flatten(1).amax(dim=1).view(-1, 1, 1)
    scaled = ((up - low) / (high - low).clamp(min=1e-12)).clamp(0.0, 1.0)
    scaled[blank] = 0.0
    return scaled.cpu().numpy().astype(np.float32), blank.cpu().numpy()
