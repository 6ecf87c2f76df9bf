"""Train and evaluation transforms (torchvision transforms v2) built from dataset params.

Both pipelines take a PIL image or a ``(3, H, W)`` uint8 tensor and return a
normalised float tensor ``(3, size, size)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from qsight.data.params import AugmentParams

Transform = Callable[[Any], torch.Tensor]
ResizeMode = Literal["center-crop", "stretch"]


def fit_transform(size: int, resize: ResizeMode | None) -> list[Any]:
    """Steps that bring any image to ``size`` x ``size`` uint8 (none when images already fit)."""
    steps: list[Any] = [T.ToImage()]
    if resize == "center-crop":
        steps += [T.Resize(size, antialias=True), T.CenterCrop(size)]
    elif resize == "stretch":
        steps.append(T.Resize((size, size), antialias=True))
    return steps


def _finish(mean: tuple[float, float, float], std: tuple[float, float, float]) -> list[Any]:
    return [T.ToDtype(torch.float32, scale=True), T.Normalize(mean=list(mean), std=list(std))]


def eval_transform(
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    resize: ResizeMode | None = "center-crop",
) -> Transform:
    """Deterministic: fit to ``size`` and normalise."""
    return T.Compose(fit_transform(size, resize) + _finish(mean, std))  # type: ignore[no-any-return]


def train_transform(
    aug: AugmentParams,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    resize: ResizeMode | None = "center-crop",
) -> Transform:
    """Fit to ``size``, then fundus-safe augmentation (crop, flips, rotation, colour jitter), normalise."""
    steps = fit_transform(size, resize)
    if aug.enabled:
        # resampling blurs small images; applied to only part of the samples so the model also
        # sees images as sharp as the (never resampled) evaluation images
        geometric: list[Any] = []
        if aug.crop_scale != (1.0, 1.0):
            geometric.append(T.RandomResizedCrop(size, scale=aug.crop_scale, ratio=aug.crop_ratio, antialias=True))
        if aug.rotation > 0:
            geometric.append(T.RandomRotation(aug.rotation, interpolation=InterpolationMode.BILINEAR, fill=0))
        if geometric and aug.geometric_p > 0:
            steps.append(T.RandomApply(geometric, p=aug.geometric_p))
        if aug.hflip > 0:
            steps.append(T.RandomHorizontalFlip(aug.hflip))
        if aug.vflip > 0:
            steps.append(T.RandomVerticalFlip(aug.vflip))
        if max(aug.brightness, aug.contrast, aug.saturation, aug.hue) > 0:
            steps.append(T.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue))
    return T.Compose(steps + _finish(mean, std))  # type: ignore[no-any-return]


def display_transform(size: int, resize: ResizeMode | None) -> Callable[[Any], torch.Tensor]:
    """What the model sees before normalisation, as uint8 ``(3, size, size)``: for overlays."""
    return T.Compose(fit_transform(size, resize))  # type: ignore[no-any-return]
