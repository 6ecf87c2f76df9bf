"""The synthetic fundus generator: seeded, vectorised numpy, one image per RNG stream.

Image ``i`` of a split depends only on ``(seed, split, i, grade, size,
difficulty)`` and :data:`GENERATOR_VERSION`; bump the version whenever the
output changes, so caches are rebuilt and the pinned checksums are updated
on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qsight.data.anatomy import background, draw_disc, draw_vessels, make_eye, pixel_grid, render_vessels, vessel_tree
from qsight.data.draw import F32, blur
from qsight.data.lesions import Layers, draw_distractors, draw_lesions

GENERATOR_VERSION = 1
SPLIT_CODES = {"train": 1, "val": 2}

_RED_TINT = np.array([0.55, 0.9, 0.85], dtype=np.float32)[:, None, None]
_PIGMENT_TINT = np.array([0.6, 0.55, 0.5], dtype=np.float32)[:, None, None]
_EXUDATE = np.array([1.0, 0.9, 0.45], dtype=np.float32)[:, None, None]
_DRUSEN = np.array([0.95, 0.85, 0.6], dtype=np.float32)[:, None, None]


def render_fundus(
    rng: np.random.Generator, grade: int, size: int, difficulty: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One fundus image ``(S, S, 3)`` uint8 of DR ``grade`` and its lesion mask ``(S, S)`` bool."""
    eye = make_eye(rng, size, difficulty)
    rgb, illum = background(rng, eye, difficulty)
    draw_disc(rng, rgb, eye)
    vessels = render_vessels(vessel_tree(rng, eye), size, eye.scale)
    layers = Layers.empty(size)
    draw_lesions(rng, eye, grade, layers)
    draw_distractors(rng, eye, difficulty, layers)
    np.clip(layers.vessels, 0.0, 1.0, out=layers.vessels)
    draw_vessels(rgb, 1.0 - (1.0 - vessels) * (1.0 - layers.vessels))
    _compose(rgb, illum, layers)
    mask = layers.lesion_mask()
    haze = grade == 4 and rng.random() < 0.3  # vitreous haze from bleeding
    _camera(rng, rgb, eye.centre, eye.radius, difficulty, extra_blur=0.9 * eye.scale if haze else 0.0)
    img = np.clip(rgb.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    inside = _retina_alpha(size, eye.centre, eye.radius) > 0.5
    return img, mask & inside


def _compose(rgb: F32, illum: F32, layers: Layers) -> None:
    for m in (layers.red, layers.yellow, layers.pigment, layers.drusen):
        np.clip(m, 0.0, 1.0, out=m)
    rgb *= 1.0 - layers.red[None] * _RED_TINT
    rgb *= 1.0 - layers.pigment[None] * _PIGMENT_TINT
    light = np.clip(illum, 0.3, None)[None]
    rgb += layers.yellow[None] * (_EXUDATE * light - rgb)
    rgb += layers.drusen[None] * (_DRUSEN * light - rgb)


def _retina_alpha(size: int, centre: np.ndarray, radius: float) -> F32:
    x, y = pixel_grid(size)
    dist = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2)
    out: F32 = np.clip((radius - dist) / 1.0 + 0.5, 0.0, 1.0)
    return out


def _camera(
    rng: np.random.Generator, rgb: F32, centre: np.ndarray, radius: float, difficulty: float, extra_blur: float
) -> None:
    """Vignetting, exposure, gamma, defocus, dark surround and sensor noise, in place."""
    size = rgb.shape[-1]
    d = difficulty
    x, y = pixel_grid(size)
    r2 = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / radius**2
    rgb *= (1.0 - rng.uniform(0.1, 0.2 + 0.3 * d) * r2 * r2)[None]
    rgb *= np.float32(np.exp(rng.normal(0.0, 0.15 * d)))
    np.clip(rgb, 0.0, 1.0, out=rgb)
    rgb **= np.float32(np.exp(rng.normal(0.0, 0.08 * d)))
    sigma = (rng.uniform(0.0, 1.0 * d) if rng.random() < 0.6 else 0.0) * size / 128.0 + extra_blur
    if sigma > 0.05:
        rgb[:] = blur(rgb, sigma)
    rgb *= _retina_alpha(size, centre, radius)[None]
    rgb += 0.012
    noise = rng.uniform(0.004, 0.004 + 0.02 * d)
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(noise)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The RNG stream of image ``index`` of ``split``; independent of every other image."""
    return np.random.default_rng([GENERATOR_VERSION, seed, SPLIT_CODES[split], index])


def quota_labels(n: int, balance: Sequence[float], seed: int, split: str) -> np.ndarray:
    """``n`` class indices with counts matching ``balance`` (largest remainder), shuffled by seed."""
    p = np.asarray(balance, dtype=np.float64)
    p = p / p.sum()
    exact = p * n
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    labels = np.repeat(np.arange(len(p)), counts)
    rng = np.random.default_rng([GENERATOR_VERSION, seed, SPLIT_CODES[split], 2**31])
    out: np.ndarray = rng.permutation(labels)
    return out


def generate_split(
    labels: Sequence[int], grades: Sequence[int], seed: int, split: str, size: int, difficulty: float
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, S, S, 3)`` uint8 and lesion masks ``(N, S, S)`` bool for class indices ``labels``."""
    images = np.empty((len(labels), size, size, 3), np.uint8)
    masks = np.empty((len(labels), size, size), bool)
    for i, label in enumerate(labels):
        images[i], masks[i] = render_fundus(image_rng(seed, split, i), grades[int(label)], size, difficulty)
    return images, masks
