"""Pictures of Grad-CAM results: originals, overlays and a collage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from qsight.evaluation.fonts import fit_font, font_of


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


PANEL = 184  # pixels per picture in the collage
GAP = 6
CAPTION = 18


def save_collage(rows: Sequence[Sequence[Panel]], path: Path, title: str = "") -> Path:
    """A grid of panels, one row per sample, each under its title (drawn with Pillow: matplotlib took
    ~0.9 s a collage, and a run draws one every validation epoch)."""
    n_rows = max(len(rows), 1)
    n_cols = max((len(r) for r in rows), default=1)
    head = 24 if title else GAP
    canvas = Image.new("RGB", (GAP + n_cols * (PANEL + GAP), head + n_rows * (CAPTION + PANEL + GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((canvas.width / 2, 6), title, fill="black", font=fit_font(title, canvas.width - 2 * GAP, 12),
                  anchor="ma")
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            x, y = GAP + c * (PANEL + GAP), head + r * (CAPTION + PANEL + GAP)
            draw.text((x + PANEL / 2, y + CAPTION - 3), panel.title, fill="black",
                      font=fit_font(panel.title, PANEL, 10), anchor="md")
            canvas.paste(_picture(panel), (x, y + CAPTION))
    canvas.save(path, format="PNG")
    return path


def _picture(panel: Panel) -> Image.Image:
    """The panel's image at PANEL × PANEL (nearest neighbour: its own pixels), lesion outlined in lime,
    peak marked with a white +, note written on a dark band."""
    height, width = panel.image.shape[:2]
    big = cv2.resize(as_rgb_uint8(panel.image), (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)
    if panel.mask is not None and panel.mask.any():
        mask = cv2.resize(panel.mask.astype(np.uint8), (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(big, contours, -1, (0, 255, 0), 1)
    picture = Image.fromarray(big)
    draw = ImageDraw.Draw(picture, "RGBA")
    if panel.peak is not None:
        px, py = (panel.peak[1] + 0.5) * PANEL / width, (panel.peak[0] + 0.5) * PANEL / height
        draw.line((px - 5, py, px + 5, py), fill="white", width=2)
        draw.line((px, py - 5, px, py + 5), fill="white", width=2)
    if panel.note:
        font = font_of(11)
        draw.rectangle((0, PANEL / 2 - 18, PANEL, PANEL / 2 + 18), fill=(0, 0, 0, 150))
        draw.multiline_text((PANEL / 2, PANEL / 2), panel.note, fill="white", font=font, anchor="mm", align="center")
    return picture
