"""DR lesions of the synthetic generator, by grade, and the grade-independent distractors.

Lesions are drawn as opacity maps; which kinds and how many follow the
International Clinical DR scale: microaneurysms only (1); plus haemorrhages
and hard exudates (2); many haemorrhages in all four quadrants and venous
beading (3); neovascularisation and pre-retinal haemorrhage (4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qsight.data.anatomy import Eye
from qsight.data.draw import F32, F64, line_opacity, splat_points, stamp_ellipses, walks

MASK_THRESHOLD = 0.3  # opacity above which a pixel belongs to a lesion


@dataclass
class Layers:
    """Opacity maps ``(S, S)`` drawn over the healthy fundus."""

    red: F32  # blood: microaneurysms, haemorrhages, pre-retinal haemorrhage
    yellow: F32  # hard exudates, cotton-wool spots
    vessels: F32  # new vessels and venous beads (drawn like vessels)
    pigment: F32  # distractor: neutral dark pigment clumps and dust shadows
    drusen: F32  # distractor: faint pale dots

    @classmethod
    def empty(cls, size: int) -> Layers:
        return cls(*(np.zeros((size, size), np.float32) for _ in range(5)))

    def lesion_mask(self) -> np.ndarray:
        """Where a DR lesion is (distractors excluded)."""
        mask: np.ndarray = (self.red > MASK_THRESHOLD) | (self.yellow > MASK_THRESHOLD)
        return mask | (self.vessels > MASK_THRESHOLD)


def _blobs(
    target: F32,
    rng: np.random.Generator,
    pts: F64,
    radius: tuple[float, float],
    aspect: tuple[float, float],
    amp: tuple[float, float],
    *,
    gaussian: bool = False,
    soft: float = 0.7,
) -> None:
    n = len(pts)
    if n == 0:
        return
    r = np.maximum(rng.uniform(*radius, n), 0.6)
    stamp_ellipses(
        target,
        pts[:, 0],
        pts[:, 1],
        r * rng.uniform(*aspect, n),
        r,
        rng.uniform(0, np.pi, n),
        rng.uniform(*amp, n),
        gaussian=gaussian,
        soft=soft,
    )


def _per_quadrant(rng: np.random.Generator, eye: Eye, n: int) -> F64:
    """``n`` points spread over all four quadrants around the retina centre (at least n//4 each)."""
    pts = eye.sample_in_retina(rng, 4 * n + 8)
    rel = pts - eye.centre
    quad = (rel[:, 0] > 0).astype(int) * 2 + (rel[:, 1] > 0).astype(int)
    chosen = [pts[quad == q][: n // 4] for q in range(4)]
    rest = n - sum(len(c) for c in chosen)
    return np.concatenate([*chosen, pts[quad >= 0][-rest:] if rest > 0 else np.empty((0, 2))])


def _exudate_clusters(rng: np.random.Generator, eye: Eye, clusters: int) -> F64:
    pts = [np.empty((0, 2))]
    for c in eye.sample_near(rng, clusters, eye.macula, 0.25):
        pts.append(eye.sample_near(rng, int(rng.integers(4, 12)), c, 0.07))
    return np.concatenate(pts)


def draw_lesions(rng: np.random.Generator, eye: Eye, grade: int, layers: Layers) -> None:
    """Add the lesions of ``grade`` (0-4) to ``layers``, in place."""
    s = eye.scale

    def n(lo: int, hi: int) -> int:
        return int(rng.integers(lo, hi + 1))

    ma = (0, n(3, 8), n(5, 12), n(8, 18), n(6, 15))[grade]
    _blobs(layers.red, rng, eye.sample_near(rng, ma, eye.macula, 0.4), (0.9 * s, 1.4 * s), (1, 1.2), (0.85, 1))
    if grade >= 2:
        hem = (0, 0, n(2, 7), n(18, 32), n(10, 26))[grade]
        pts = eye.sample_near(rng, hem, eye.macula, 0.45) if grade == 2 else _per_quadrant(rng, eye, hem)
        _blobs(layers.red, rng, pts, (1.6 * s, 3.4 * s), (1.0, 1.8), (0.75, 0.95))
        clusters = (0, 0, n(1, 2), n(1, 3), n(0, 2))[grade]
        _blobs(layers.yellow, rng, _exudate_clusters(rng, eye, clusters), (0.8 * s, 1.7 * s), (1, 1.5), (0.8, 1))
    if grade >= 3:
        flame = n(2, 6)
        _blobs(layers.red, rng, eye.sample_in_retina(rng, flame, 0.7), (1.2 * s, 1.8 * s), (2.2, 3.2), (0.7, 0.9))
        cws = n(0, 3)
        _blobs(
            layers.yellow,
            rng,
            eye.sample_in_retina(rng, cws, 0.6),
            (2.4 * s, 3.8 * s),
            (1, 1.6),
            (0.5, 0.7),
            gaussian=True,
        )
        if rng.random() < 0.85:
            _venous_beading(rng, eye, layers.vessels)
    if grade == 4:
        _neovascularisation(rng, eye, layers.vessels, eye.disc, eye.disc_radius * 2.2, n(14, 26))
        if rng.random() < 0.35:  # new vessels elsewhere, along an arcade
            site = eye.sample_in_retina(rng, 1, 0.7)[0]
            _neovascularisation(rng, eye, layers.vessels, site, 6.0 * s, n(8, 14))
        if rng.random() < 0.75:
            _preretinal(rng, eye, layers.red)


def _venous_beading(rng: np.random.Generator, eye: Eye, target: F32) -> None:
    """Sausage-like swellings along a stretch of one or two major veins."""
    s = eye.scale
    for vein in rng.permutation(len(eye.veins))[: int(rng.integers(1, 3))]:
        pts = eye.veins[vein]
        a, b = int(len(pts) * 0.2), int(len(pts) * rng.uniform(0.5, 0.85))
        beads = pts[a:b:14]  # points are 0.5 px apart at 128 px: a bead every 7 px
        r = np.full(len(beads), 1.9 * s)
        stamp_ellipses(target, beads[:, 0], beads[:, 1], r * 1.2, r, np.zeros(len(beads)), np.full(len(beads), 0.9))


def _neovascularisation(rng: np.random.Generator, eye: Eye, target: F32, site: F64, spread: float, loops: int) -> None:
    """A tangle of fine, tortuous new vessels around ``site``."""
    s = eye.scale
    density = np.zeros_like(target)
    starts = site + rng.normal(0.0, spread * 0.5, (loops, 2))
    steps = (rng.uniform(10, 26, loops) / 0.4).astype(np.int64)
    curl = rng.choice([-1.0, 1.0], loops) * rng.uniform(0.15, 0.4, loops) / s
    paths = walks(rng, starts, rng.uniform(0, 2 * np.pi, loops), steps, 0.4 * s, curl, 0.25 / s**1.5)
    splat_points(density, np.concatenate(paths), 0.4 * s)
    op = line_opacity(density, max(0.9 * s, 0.7), strength=0.85)
    target += op


def _preretinal(rng: np.random.Generator, eye: Eye, target: F32) -> None:
    """A large boat-shaped haemorrhage with a flat fluid level, in front of the retina."""
    s = eye.scale
    c = eye.sample_near(rng, 1, eye.disc + np.array([0.0, eye.radius * 0.25]), 0.25)[0]
    rx = rng.uniform(6.0, 10.0) * s
    stamp_ellipses(
        target,
        np.array([c[0]]),
        np.array([c[1]]),
        np.array([rx]),
        np.array([rx * rng.uniform(0.6, 0.85)]),
        np.array([eye.rotation]),
        np.array([0.95]),
        soft=1.0,
        flat_top=np.array([rng.uniform(0.0, 0.45)]),
    )


def draw_distractors(rng: np.random.Generator, eye: Eye, difficulty: float, layers: Layers) -> None:
    """Lesion-like findings that carry no grade: drusen, pigment clumps, dust shadows."""
    s = eye.scale
    lam = 2.0 * difficulty
    drusen = eye.sample_near(rng, int(rng.poisson(lam * 2)), eye.macula, 0.3)
    _blobs(layers.drusen, rng, drusen, (0.9 * s, 1.6 * s), (1, 1.3), (0.3, 0.55), gaussian=True)
    pigment = eye.sample_in_retina(rng, int(rng.poisson(lam)))
    _blobs(layers.pigment, rng, pigment, (1.0 * s, 2.2 * s), (1, 1.6), (0.35, 0.6))
    dust = eye.sample_in_retina(rng, int(rng.poisson(lam * 0.5)), 0.9)
    _blobs(layers.pigment, rng, dust, (3.0 * s, 6.0 * s), (1, 1.1), (0.15, 0.3), gaussian=True)
