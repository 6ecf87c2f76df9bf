"""Grad-CAM explanations for the ensemble and each active head.

:func:`explain` computes one map per sample and target (``"ensemble"`` or a head
name), writes ``<sample>_original.png``, ``<sample>_overlay_<target>.png`` and
``collage.png``, and scores each target with the pointing game when lesion masks are
given. :func:`score_explanations` scores a larger set in batches and writes nothing.
The model's training flags, ``requires_grad`` flags and ``.grad`` tensors are restored
afterwards and every hook is released, also on errors. Gradients flow from the input
(parameters are temporarily frozen), so a frozen backbone explains as well as a
trainable one, and no parameter gradient is touched. Targets without a gradient (a head
run without one, or an ensemble of such heads only) are skipped and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from qsight.evaluation.artifact import Artifact, safe_name
from qsight.evaluation.cams import CamBatch, CamMethod, cam_batch, cam_mode, select_output
from qsight.evaluation.layers import MIN_MAP_SIZE, TargetLayer, resolve_target_layer, unwrap
from qsight.evaluation.pointing import (
    EMPTY,
    ZHANG_TOLERANCE,
    PointingScore,
    cam_peak,
    has_lesion,
    score_pointing,
)
from qsight.evaluation.render import Panel, as_rgb_uint8, fit_map, overlay, save_collage, save_png

log = logging.getLogger("qsight.evaluation")

__all__ = ["GradCamResult", "cam_mode", "compute_cams", "explain", "pointing_game", "score_explanations",
           "select_output"]

ClassSource = Literal["label", "predicted"]


@dataclass
class GradCamResult:
    """What :func:`explain` wrote and measured."""

    layer: str  # dotted path of the hooked layer
    targets: list[str]  # explained targets, in order
    cams: dict[str, np.ndarray]  # target -> (B, H, W) maps in [0, 1]
    originals: list[Path]
    overlays: dict[str, list[Path]]  # target -> one path per sample
    collage: Path
    pointing_game: dict[str, float | None]  # None without lesion masks (or no map to score)
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why it was not explained
    blank: dict[str, np.ndarray] = field(default_factory=dict)  # target -> (B,) bool: map points nowhere
    scores: dict[str, PointingScore] = field(default_factory=dict)  # with lesion masks

    def metrics(self) -> dict[str, float]:
        """``<target>/pointing_game`` for every target that could be scored (on these few samples)."""
        return {f"{t}/pointing_game": v for t, v in self.pointing_game.items() if v is not None}

    def artifacts(self, per_sample: bool = False) -> list[Artifact]:
        """The collage, and with ``per_sample`` every original and overlay."""
        found = [Artifact("image", "gradcam/collage", self.collage)]
        if per_sample:
            paths = self.originals + [p for t in self.targets for p in self.overlays[t]]
            found += [Artifact("image", f"gradcam/{p.stem}", p) for p in paths]
        return found


@dataclass
class PointingReport:
    """What :func:`score_explanations` measured: one score per explained target."""

    layer: str
    scores: dict[str, PointingScore]
    skipped: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """``<target>/<metric>`` for the four pointing-game metrics of every target."""
        return {f"{t}/{k}": v for t, score in self.scores.items() for k, v in score.metrics().items()}


def pointing_game(cams: np.ndarray, masks: Sequence[np.ndarray | None]) -> float | None:
    """Share of samples whose map peak lies on their lesion mask; samples without lesions are skipped."""
    return score_pointing(cams, masks).value


def compute_cams(
    model: nn.Module,
    images: Tensor,
    classes: Mapping[str, Sequence[int]],
    layer: TargetLayer,
    method: CamMethod = "layercam",
) -> dict[str, np.ndarray]:
    """Maps (B, H, W) per target for the given class of each sample. Call inside :func:`cam_mode`."""
    return cam_batch(model, images, layer, list(classes), classes, method).maps


def choose_layer(model: nn.Module, images: Tensor, target_layer: str | None, min_map_size: int) -> TargetLayer:
    """The named layer, or the one chosen for these images' size."""
    size = (int(images.shape[-2]), int(images.shape[-1]))
    return resolve_target_layer(model, target_layer, input_size=size, min_size=min_map_size)


def explain(
    model: nn.Module,
    images: Tensor,
    display_images: Sequence[np.ndarray],
    labels: Sequence[int],
    targets: Sequence[str],
    out_dir: Path,
    target_layer: str | None = None,
    lesion_masks: Sequence[np.ndarray | None] | None = None,
    *,
    names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    class_source: ClassSource = "label",
    method: CamMethod = "layercam",
    min_map_size: int = MIN_MAP_SIZE,
    tolerance: float = ZHANG_TOLERANCE,
) -> GradCamResult:
    """Explain ``images`` (B, 3, H, W, model-ready) for each of ``targets``.

    ``display_images`` are the same samples as HxWx3 uint8 pictures, ``labels`` their
    classes, ``names`` their file-name stems (default ``sample00``...). Each sample is
    explained for its true class (``class_source="label"``) or for the class the
    target predicts. Targets the model does not output, or that carry no gradient back to
    the target layer (a head run without gradients), are skipped, with the reason, in ``skipped``.
    ``tolerance`` is the pointing game's hit radius (see :mod:`qsight.evaluation.pointing`).
    """
    _check_grad_mode()
    model = unwrap(model)
    names = [safe_name(n) for n in names] if names is not None else [f"sample{i:02d}" for i in range(len(images))]
    _check_batch(len(images), display_images, labels, names, lesion_masks)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch = images.detach().to(_device(model))
    layer = choose_layer(model, batch, target_layer, min_map_size)
    classes = {t: list(labels) for t in targets} if class_source == "label" else None
    with cam_mode(model):
        cams = cam_batch(model, batch, layer, targets, classes, method)
    _log_skipped(cams.skipped)
    masks = list(lesion_masks) if lesion_masks is not None else [None] * len(names)
    files = _write_images(cams, display_images, names, out_dir)
    panels = _panels(cams, display_images, labels, masks, names, class_names)
    explained = "true" if class_source == "label" else "predicted"
    title = f"{method} at {layer.path}, for each sample's {explained} class"
    collage = save_collage(panels, out_dir / "collage.png", title=title)
    scores = {}
    if lesion_masks is not None:
        scores = {t: score_pointing(c, masks, cams.blank[t], tolerance) for t, c in cams.maps.items()}
    values = {t: scores[t].value if t in scores else None for t in cams.maps}
    return GradCamResult(layer.path, list(cams.maps), cams.maps, files[0], files[1], collage, values,
                         cams.skipped, cams.blank, scores)


def score_explanations(
    model: nn.Module,
    images: Tensor,
    labels: Sequence[int],
    masks: Sequence[np.ndarray | None],
    targets: Sequence[str],
    *,
    target_layer: str | None = None,
    batch_size: int = 32,
    class_source: ClassSource = "label",
    method: CamMethod = "layercam",
    min_map_size: int = MIN_MAP_SIZE,
    tolerance: float = ZHANG_TOLERANCE,
) -> PointingReport:
    """The pointing game of each target over ``images`` (B, 3, H, W), in batches; nothing is written."""
    _check_grad_mode()
    model = unwrap(model)
    _check_batch(len(images), labels, masks)
    device = _device(model)
    layer = choose_layer(model, images[:1].to(device), target_layer, min_map_size)
    scores = {t: EMPTY for t in targets}
    skipped: dict[str, str] = {}
    with cam_mode(model):
        for start in range(0, len(images), max(1, batch_size)):
            part = slice(start, start + max(1, batch_size))
            chunk = list(labels[part])
            classes = {t: chunk for t in targets} if class_source == "label" else None
            cams = cam_batch(model, images[part].detach().to(device), layer, targets, classes, method)
            skipped.update(cams.skipped)
            for t, maps in cams.maps.items():
                scores[t] = scores[t] + score_pointing(maps, list(masks[part]), cams.blank[t], tolerance)
    return PointingReport(layer.path, {t: s for t, s in scores.items() if t not in skipped}, skipped)


def _check_grad_mode() -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError("Grad-CAM needs gradients: call explain outside torch.inference_mode()")


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _log_skipped(skipped: Mapping[str, str]) -> None:
    for target, why in skipped.items():
        log.info("Grad-CAM skips %s: %s", target, why)


def _check_batch(count: int, *per_sample: Sequence[object] | None) -> None:
    if count == 0:
        raise ValueError("explain needs at least one image")
    lengths = [len(seq) for seq in per_sample if seq is not None]
    if any(n != count for n in lengths):
        raise ValueError(f"{count} images but per-sample inputs of lengths {lengths}")


def _write_images(
    cams: CamBatch, display: Sequence[np.ndarray], names: Sequence[str], out_dir: Path
) -> tuple[list[Path], dict[str, list[Path]]]:
    originals = [save_png(img, out_dir / f"{n}_original.png") for img, n in zip(display, names, strict=True)]
    overlays = {
        t: [
            save_png(as_rgb_uint8(img) if blank else overlay(img, cam), out_dir / f"{n}_overlay_{safe_name(t)}.png")
            for img, cam, blank, n in zip(display, maps, cams.blank[t], names, strict=True)
        ]
        for t, maps in cams.maps.items()
    }
    return originals, overlays


BLANK_NOTE = "blank map:\npoints nowhere"


def _panels(
    cams: CamBatch,
    display: Sequence[np.ndarray],
    labels: Sequence[int],
    masks: Sequence[np.ndarray | None],
    names: Sequence[str],
    class_names: Sequence[str] | None,
) -> list[list[Panel]]:
    def name(c: int) -> str:
        return class_names[c] if class_names is not None else str(c)

    rows: list[list[Panel]] = []
    for i, image in enumerate(display):
        rgb = as_rgb_uint8(image)
        mask = masks[i] if has_lesion(masks[i]) else None
        row = [Panel(rgb, f"{names[i]}: true {name(int(labels[i]))}", mask=mask)]
        for target, maps in cams.maps.items():
            title = f"{target}: predicts {name(cams.predicted[target][i])}"
            if cams.blank[target][i]:
                row.append(Panel(rgb, title, mask=mask, note=BLANK_NOTE))
                continue
            heat = fit_map(maps[i], rgb.shape[0], rgb.shape[1])
            row.append(Panel(overlay(rgb, heat), title, peak=cam_peak(heat), mask=mask))
        rows.append(row)
    return rows
