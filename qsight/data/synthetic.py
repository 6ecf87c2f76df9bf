"""The synthetic fundus generator: seeded, vectorised numpy, one image per RNG stream.

Image ``i`` of a split depends only on ``(seed, split, i, grade, size,
difficulty)`` and :data:`GENERATOR_VERSION`; bump the version whenever the
output changes, so caches are rebuilt and the pinned checksums are updated
on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qsight.data.anatomy import background, draw_disc, make_eye, render_vessels, vessel_tree
from qsight.data.draw import F32, blur
from qsight.data.lesions import Layers, draw_distractors, draw_lesions

GENERATOR_VERSION = 1
SPLIT_CODES = {"train": 1, "val": 2, "test": 3}  # each split its own RNG streams

# Per-channel absorption (R, G, B): blood darkens green and blue most, pigment is neutral.
_VESSEL_TINT = np.array([0.45, 0.78, 0.72], dtype=np.float32)[:, None, None]
_RED_TINT = np.array([0.55, 0.9, 0.85], dtype=np.float32)[:, None, None]
_PIGMENT_TINT = np.array([0.6, 0.55, 0.5], dtype=np.float32)[:, None, None]
_EXUDATE = np.array([1.0, 0.9, 0.45], dtype=np.float32)[:, None, None]
_DRUSEN_SHIFT = np.array([0.0, -0.02, 0.12], dtype=np.float32)[:, None, None]  # drusen: paler than exudates


def render_fundus(
    rng: np.random.Generator, grade: int, size: int, difficulty: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One fundus image ``(S, S, 3)`` uint8 of DR ``grade`` and its lesion mask ``(S, S)`` bool."""
    eye = make_eye(rng, size, difficulty)
    rgb, illum, r2 = background(rng, eye, difficulty)
    vessels = render_vessels(vessel_tree(rng, eye), size, eye.scale)
    layers = Layers.empty(size)
    draw_lesions(rng, eye, grade, layers)
    draw_distractors(rng, eye, difficulty, layers)
    for m in (layers.red, layers.yellow, layers.vessels, layers.pigment, layers.drusen):
        np.clip(m, 0.0, 1.0, out=m)
    rgb *= 1.0 - vessels[None] * _VESSEL_TINT
    draw_disc(rng, rgb, eye)
    # new vessels grow over the disc, so lesions are composed after it
    absorb = layers.vessels[None] * _VESSEL_TINT + layers.red[None] * _RED_TINT
    absorb += layers.pigment[None] * _PIGMENT_TINT
    rgb *= 1.0 - np.minimum(absorb, 1.0)
    pale = layers.yellow + layers.drusen
    colour = (_EXUDATE + _DRUSEN_SHIFT * (layers.drusen / np.maximum(pale, 1e-3))[None]) * np.maximum(illum, 0.3)
    rgb += np.minimum(pale, 1.0)[None] * (colour - rgb)
    alpha = np.clip((1.0 - np.sqrt(r2)) * eye.radius + 0.5, 0.0, 1.0)
    haze = grade == 4 and rng.random() < 0.3  # vitreous haze from bleeding
    _camera(rng, rgb, r2, alpha, difficulty, extra_blur=0.9 * eye.scale if haze else 0.0)
    img = (rgb.transpose(1, 2, 0) * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    return img, layers.lesion_mask() & (alpha > 0.5)


def _camera(rng: np.random.Generator, rgb: F32, r2: F32, alpha: F32, difficulty: float, extra_blur: float) -> None:
    """Vignetting, exposure, tone curve, defocus, dark surround and sensor noise, in place."""
    size = rgb.shape[-1]
    d = difficulty
    gain = float(np.exp(rng.normal(0.0, 0.15 * d)))
    rgb *= (1.0 - float(rng.uniform(0.1, 0.2 + 0.3 * d)) * r2 * r2)[None] * gain
    np.clip(rgb, 0.0, 1.0, out=rgb)
    bend = float(np.clip(rng.normal(0.0, 0.15 * d), -0.5, 0.5))  # a cheap gamma-like tone curve
    rgb *= 1.0 + bend * (1.0 - rgb)
    sigma = (rng.uniform(0.0, 1.0 * d) if rng.random() < 0.6 else 0.0) * size / 128.0 + extra_blur
    if sigma > 0.05:
        rgb[:] = blur(rgb, sigma)
    noise = float(rng.uniform(0.002, 0.002 + 0.01 * d))
    grain = rng.standard_normal((size, size), dtype=np.float32) * noise
    rgb *= alpha[None]
    rgb += (grain + 0.012)[None]


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
    labels: Sequence[int],
    grades: Sequence[int],
    seed: int,
    split: str,
    size: int,
    difficulty: float,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, S, S, 3)`` uint8 and lesion masks ``(N, S, S)`` bool for class indices ``labels``.

    ``labels[j]`` is image ``start + j`` of the split (so chunks can be rendered apart).
    """
    images = np.empty((len(labels), size, size, 3), np.uint8)
    masks = np.empty((len(labels), size, size), bool)
    for j, label in enumerate(labels):
        rng = image_rng(seed, split, start + j)
        images[j], masks[j] = render_fundus(rng, grades[int(label)], size, difficulty)
    return images, masks
