"""Grad-CAM explanations (pytorch-grad-cam) for the ensemble and each active head.

:func:`explain` computes one CAM per sample and target (``"ensemble"`` or a head
name), writes ``<sample>_original.png``, ``<sample>_overlay_<target>.png`` and
``collage.png``, and scores each target with the pointing game when lesion masks
are given. The model's training flags, ``requires_grad`` flags and ``.grad``
tensors are restored afterwards and every hook is released, also on errors.
Gradients flow from the input (parameters are temporarily frozen), so a frozen
backbone explains as well as a trainable one, and no parameter gradient is touched.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from qsight.evaluation.artifact import Artifact, safe_name
from qsight.evaluation.layers import TargetLayer, resolve_target_layer, unwrap
from qsight.evaluation.render import Panel, as_rgb_uint8, fit_map, overlay, save_collage, save_png
from qsight.metric_names import ENSEMBLE

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
    pointing_game: dict[str, float | None]  # None without lesion masks
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why it was not explained

    def metrics(self) -> dict[str, float]:
        """``<target>/pointing_game`` for every target that could be scored."""
        return {f"{t}/pointing_game": v for t, v in self.pointing_game.items() if v is not None}

    def artifacts(self, per_sample: bool = False) -> list[Artifact]:
        """The collage, and with ``per_sample`` every original and overlay."""
        found = [Artifact("image", "gradcam/collage", self.collage)]
        if per_sample:
            paths = self.originals + [p for t in self.targets for p in self.overlays[t]]
            found += [Artifact("image", f"gradcam/{p.stem}", p) for p in paths]
        return found


class _OutputView(nn.Module):
    """``model`` seen as image -> logits of one target, as pytorch-grad-cam needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.target = ENSEMBLE

    def forward(self, images: Tensor) -> Tensor:
        return select_output(self.model(images), self.target)


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
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad


def pointing_game(cams: np.ndarray, masks: Sequence[np.ndarray | None]) -> float | None:
    """Share of samples whose CAM peak lies on their lesion mask; samples without lesions are skipped."""
    hits = [_hit(cam, np.asarray(m, dtype=bool)) for cam, m in zip(cams, masks, strict=True) if _has(m)]
    return float(np.mean(hits)) if hits else None


def cam_peak(cam: np.ndarray) -> tuple[int, int]:
    """(row, col) of the CAM's maximum (the first, on ties)."""
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(row), int(col)


def _has(mask: np.ndarray | None) -> bool:
    return mask is not None and bool(np.asarray(mask).any())


def _hit(cam: np.ndarray, mask: np.ndarray) -> bool:
    return bool(mask[cam_peak(fit_map(cam, mask.shape[0], mask.shape[1]))])


def compute_cams(
    model: nn.Module,
    images: Tensor,
    classes: Mapping[str, Sequence[int]],
    layer: TargetLayer,
) -> dict[str, np.ndarray]:
    """Grad-CAM maps (B, H, W) per target for the given class of each sample.

    Call inside :func:`cam_mode`. The hooks are removed before returning, also on errors.
    """
    view = _OutputView(model)
    inputs = images.detach().requires_grad_(True)  # gradients flow from the input, not the weights
    cam = GradCAM(model=view, target_layers=[layer.module], reshape_transform=layer.reshape)
    try:
        maps: dict[str, np.ndarray] = {}
        for target, chosen in classes.items():
            view.target = target
            wanted = [ClassifierOutputTarget(int(c)) for c in chosen]
            maps[target] = np.asarray(cam(input_tensor=inputs, targets=wanted), dtype=np.float32)
        return maps
    finally:
        cam.activations_and_grads.release()


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
) -> GradCamResult:
    """Explain ``images`` (B, 3, H, W, model-ready) for each of ``targets``.

    ``display_images`` are the same samples as HxWx3 uint8 pictures, ``labels`` their
    classes, ``names`` their file-name stems (default ``sample00``...). Each sample is
    explained for its true class (``class_source="label"``) or for the class the
    target predicts. Targets the model does not output, or that carry no gradient back to
    the input (a head run without gradients), are skipped, with the reason, in ``skipped``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("Grad-CAM needs gradients: call explain outside torch.inference_mode()")
    model = unwrap(model)
    layer = resolve_target_layer(model, target_layer)
    names = [safe_name(n) for n in names] if names is not None else [f"sample{i:02d}" for i in range(len(images))]
    _check_batch(len(images), display_images, labels, names, lesion_masks)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    with cam_mode(model):
        batch = images.detach().to(device)
        predicted, skipped = _predict(model, batch, targets)
        classes = {t: list(labels) if class_source == "label" else predicted[t] for t in predicted}
        cams = compute_cams(model, batch, classes, layer)
    masks = list(lesion_masks) if lesion_masks is not None else [None] * len(names)
    files = _write_images(cams, display_images, names, out_dir)
    panels = _panels(cams, predicted, display_images, labels, masks, names, class_names)
    explained = "true" if class_source == "label" else "predicted"
    title = f"Grad-CAM at {layer.path}, for each sample's {explained} class"
    collage = save_collage(panels, out_dir / "collage.png", title=title)
    scores = {t: (pointing_game(c, masks) if lesion_masks is not None else None) for t, c in cams.items()}
    return GradCamResult(layer.path, list(cams), cams, files[0], files[1], collage, scores, skipped)


def _check_batch(count: int, *per_sample: Sequence[object] | None) -> None:
    if count == 0:
        raise ValueError("explain needs at least one image")
    lengths = [len(seq) for seq in per_sample if seq is not None]
    if any(n != count for n in lengths):
        raise ValueError(f"{count} images but per-sample inputs of lengths {lengths}")


def _predict(model: nn.Module, batch: Tensor, targets: Sequence[str]) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Predicted class per explainable target, and why the others cannot be explained."""
    probe = batch.clone().requires_grad_(True)
    output = model(probe)
    predicted: dict[str, list[int]] = {}
    skipped: dict[str, str] = {}
    for target in targets:
        try:
            logits = select_output(output, target)
        except KeyError:
            skipped[target] = "not in the model output (inactive head)"
            continue
        if not logits.requires_grad:
            skipped[target] = "no gradient from the input (non-differentiable head, or run under no_grad)"
            continue
        predicted[target] = [int(c) for c in logits.detach().argmax(dim=1).tolist()]
    return predicted, skipped


def _write_images(
    cams: dict[str, np.ndarray], display: Sequence[np.ndarray], names: Sequence[str], out_dir: Path
) -> tuple[list[Path], dict[str, list[Path]]]:
    originals = [save_png(img, out_dir / f"{n}_original.png") for img, n in zip(display, names, strict=True)]
    overlays = {
        t: [
            save_png(overlay(img, cam), out_dir / f"{n}_overlay_{safe_name(t)}.png")
            for img, cam, n in zip(display, maps, names, strict=True)
        ]
        for t, maps in cams.items()
    }
    return originals, overlays


def _panels(
    cams: dict[str, np.ndarray],
    predicted: dict[str, list[int]],
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
        mask = masks[i] if _has(masks[i]) else None
        row = [Panel(rgb, f"{names[i]}: true {name(int(labels[i]))}", mask=mask)]
        for target, maps in cams.items():
            heat = fit_map(maps[i], rgb.shape[0], rgb.shape[1])
            title = f"{target}: predicts {name(predicted[target][i])}"
            row.append(Panel(overlay(rgb, heat), title, peak=cam_peak(heat), mask=mask))
        rows.append(row)
    return rows
