"""Pictures of Grad-CAM results: originals, overlays and a collage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import cv2
import numpy as np
from matplotlib.figure import Figure
from PIL import Image


@dataclass(frozen=True)
class Panel:
    """One picture of the collage, with its title; ``peak`` (row, col) is marked, ``mask`` outlined.

    ``note`` is written across the picture (e.g. why a map is not drawn).
    """

    image: np.ndarray  # HxWx3 uint8
    title: str
    peak: tuple[int, int] | None = None
    mask: np.ndarray | None = None
    note: str | None = None


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 from uint8 or [0, 1] float images, grey (HxW) ones included."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {np.asarray(image).shape}")
    return array


def fit_map(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cam`` resized (bilinear) to ``height`` x ``width`` when its size differs."""
    if cam.shape == (height, width):
        return cam
    return np.asarray(cv2.resize(cam.astype(np.float32), (width, height)), dtype=np.float32)


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The CAM as a jet heat map blended half and half over ``image`` (HxWx3 uint8), scaled so its
    brightest channel is 255 (the blend of pytorch-grad-cam's ``show_cam_on_image``)."""
    rgb = as_rgb_uint8(image)
    heat = np.clip(fit_map(cam, rgb.shape[0], rgb.shape[1]), 0.0, 1.0)
    levels = (255 * heat).astype(np.uint8)
    jet = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = 0.5 * (jet.astype(np.float32) / 255) + 0.5 * (rgb.astype(np.float32) / 255.0)
    return np.asarray(np.uint8(255 * (blended / np.max(blended))), dtype=np.uint8)


def save_png(image: np.ndarray, path: Path) -> Path:
    """Write an RGB image as PNG."""
    Image.fromarray(as_rgb_uint8(image)).save(path, format="PNG")
    return path


def save_collage(rows: Sequence[Sequence[Panel]], path: Path, title: str = "") -> Path:
    """A grid of panels, one row per sample."""
    n_rows = max(len(rows), 1)
    n_cols = max((len(r) for r in rows), default=1)
    height = 2.0 * n_rows + 0.4
    fig = Figure(figsize=(1.9 * n_cols, height), dpi=100)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            _draw(axes[r][c], panel)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.35 / height))  # keep the title clear of the first row
    fig.savefig(path)
    return path


def _draw(ax: object, panel: Panel) -> None:
    ax.imshow(panel.image)  # type: ignore[attr-defined]
    if panel.mask is not None and panel.mask.any():
        ax.contour(panel.mask.astype(np.float32), levels=[0.5], colors="lime", linewidths=0.8)  # type: ignore[attr-defined]
    if panel.peak is not None:
        ax.plot(panel.peak[1], panel.peak[0], marker="+", color="white", markersize=9, mew=2)  # type: ignore[attr-defined]
    if panel.note:
        height, width = panel.image.shape[:2]
        ax.text(  # type: ignore[attr-defined]
            width / 2, height / 2, panel.note, ha="center", va="center", fontsize=7, color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"},
        )
    ax.set_title(panel.title, fontsize=7)  # type: ignore[attr-defined]
