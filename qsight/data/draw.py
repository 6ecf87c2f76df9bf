"""Vectorised numpy drawing primitives of the synthetic fundus generator.

Maps are float32 arrays ``(S, S)``; coordinates are pixels with ``(x, y)``
measured from the top-left corner of the top-left pixel.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 at run time; numpy's stubs widen arithmetic with Python floats to float64
F32 = NDArray[np.floating[Any]]
F64 = NDArray[np.float64]


def _kernel(sigma: float) -> F32:
    r = max(1, int(np.ceil(3.0 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    out: F32 = (k / k.sum()).astype(np.float32)
    return out


def _convolve_axis(img: F32, k: F32, axis: int) -> F32:
    # Shifted sums in a fixed order: no BLAS, so results do not depend on threads or CPU.
    r = len(k) // 2
    n = img.shape[axis]
    pad = [(0, 0)] * img.ndim
    pad[axis] = (r, r)
    p = np.pad(img, pad, mode="edge")
    lead = (slice(None),) * axis
    out: F32 = k[0] * p[(*lead, slice(0, n))]
    for j in range(1, len(k)):
        out += k[j] * p[(*lead, slice(j, j + n))]
    return out


def blur(img: F32, sigma: float) -> F32:
    """Separable Gaussian blur of the last two axes (``(S, S)`` or ``(C, S, S)``), edges replicated."""
    if sigma < 0.05:
        return img
    k = _kernel(sigma)
    return _convolve_axis(_convolve_axis(img, k, img.ndim - 1), k, img.ndim - 2)


@lru_cache(maxsize=16)
def _upsample_index(size: int, grid: int) -> tuple[NDArray[np.int64], F32]:
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, grid - 2)
    return lo, (pos - lo).astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, grid: int) -> F32:
    """Low-frequency noise in about [-1, 1]: a random ``grid``² lattice, bilinearly upsampled."""
    lo, f = _upsample_index(size, grid)
    lattice = rng.standard_normal((grid, grid)).astype(np.float32)
    rows = lattice[lo] * (1.0 - f)[:, None] + lattice[lo + 1] * f[:, None]  # (size, grid)
    out: F32 = rows[:, lo] * (1.0 - f) + rows[:, lo + 1] * f
    return out


def stamp_ellipses(
    target: F32,
    cx: F64,
    cy: F64,
    rx: F64,
    ry: F64,
    angle: F64,
    amp: F64,
    *,
    soft: float = 0.7,
    gaussian: bool = False,
    flat_top: F64 | None = None,
) -> None:
    """Add soft filled ellipses (or Gaussians) to ``target`` in place, all blobs at once.

    ``soft`` is the edge width in pixels. ``flat_top`` (fraction of ``ry``, per
    blob) cuts each ellipse above that height, giving the boat shape of a
    pre-retinal haemorrhage (fluid level).
    """
    if cx.size == 0:
        return
    size = target.shape[0]
    half = int(np.ceil(max(float(rx.max()), float(ry.max())) * (2.0 if gaussian else 1.0) + soft + 1))
    off = np.arange(-half, half + 1)
    ox, oy = np.meshgrid(off, off)
    px = np.floor(cx)[:, None, None].astype(np.int64) + ox[None]
    py = np.floor(cy)[:, None, None].astype(np.int64) + oy[None]
    dx = px + 0.5 - cx[:, None, None]
    dy = py + 0.5 - cy[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    rxx, ryy = rx[:, None, None], ry[:, None, None]
    rho = np.sqrt((u / rxx) ** 2 + (v / ryy) ** 2)
    if gaussian:
        w = np.exp(-0.5 * (rho * 1.5) ** 2)
    else:
        # distance to the rim in pixels, approximately, mapped through a linear ramp
        rim = (1.0 - rho) * np.minimum(rxx, ryy)
        w = np.clip(rim / soft + 0.5, 0.0, 1.0)
    if flat_top is not None:
        w = w * np.clip((dy - (-flat_top[:, None, None] * ryy)) / soft + 0.5, 0.0, 1.0)
    w = w * amp[:, None, None]
    ok = (px >= 0) & (px < size) & (py >= 0) & (py < size) & (w > 1e-3)
    flat = (py[ok] * size + px[ok]).astype(np.int64)
    target += np.bincount(flat, weights=w[ok], minlength=size * size).reshape(size, size).astype(np.float32)


def walks(
    rng: np.random.Generator,
    starts: F64,
    angles: F64,
    steps: NDArray[np.int64],
    step: float,
    curvature: F64,
    wiggle: float,
) -> list[F64]:
    """Smooth random walks, all at once: walk ``i`` is ``(steps[i], 2)`` points from ``starts[i]``.

    The heading starts at ``angles[i]`` and turns by ``curvature[i]`` radians per
    pixel plus white noise of strength ``wiggle``.
    """
    k = len(starts)
    m = int(steps.max()) if k else 0
    turns = curvature[:, None] + wiggle * rng.standard_normal((k, m))
    heading = angles[:, None] + np.cumsum(turns, axis=1) * step
    pts = np.empty((k, m, 2))
    pts[..., 0] = starts[:, 0, None] + np.cumsum(np.cos(heading), axis=1) * step
    pts[..., 1] = starts[:, 1, None] + np.cumsum(np.sin(heading), axis=1) * step
    return [pts[i, : steps[i]] for i in range(k)]


def splat_points(target: F32, pts: F64, weights: F64 | float = 1.0) -> None:
    """Add point masses at ``pts`` (``(n, 2)`` pixel coords) to ``target`` with bilinear weights."""
    size = target.shape[0]
    x = pts[:, 0] - 0.5
    y = pts[:, 1] - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), x.shape)
    idx: list[NDArray[np.int64]] = []
    wts: list[F64] = []
    for ddx, ddy, ww in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + ddx, y0 + ddy
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        idx.append(yi[ok] * size + xi[ok])
        wts.append((ww * w)[ok])
    flat = np.concatenate(idx)
    target += (
        np.bincount(flat, weights=np.concatenate(wts), minlength=size * size).reshape(size, size).astype(np.float32)
    )


def line_opacity(density: F32, width: float, strength: float = 0.9) -> F32:
    """Opacity of lines splatted at 1 point per pixel of length and blurred to ``width`` pixels.

    A blurred line of unit linear density peaks at ``1/(sqrt(2 pi) sigma)``;
    scaling by that makes the centre opacity ``strength`` whatever the width.
    """
    sigma = max(width / 2.355, 0.35)
    peak = 1.0 / (np.sqrt(2.0 * np.pi) * sigma)
    blurred = blur(density, sigma)
    out: F32 = (1.0 - np.exp(-blurred * (2.3 * strength / peak))).astype(np.float32)
    return out
