"""The healthy fundus of the synthetic generator: retina, optic disc, macula, vessel tree."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from qsight.data.draw import F32, F64, line_opacity, smooth_noise, splat_points, walks


@lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[F32, F32]:
    """Pixel-centre coordinates ``(x, y)``, each ``(S, S)``, in pixels."""
    c = np.arange(size, dtype=np.float32) + 0.5
    x, y = np.meshgrid(c, c)
    return x, y


@dataclass
class Eye:
    """Geometry of one synthetic eye in pixel coordinates."""

    size: int
    scale: float  # pixels per pixel of the 128 px reference
    centre: F64  # retina centre
    radius: float  # retina radius
    disc: F64
    disc_radius: float
    macula: F64
    rotation: float
    veins: list[F64] = field(default_factory=list)  # vein trunks (point arrays), for beading

    def sample_in_retina(self, rng: np.random.Generator, n: int, max_r: float = 0.85) -> F64:
        """``n`` points uniform over the retina disc (radius fraction ``max_r``), away from the disc."""
        out = np.empty((0, 2))
        while len(out) < n:
            k = max(2 * (n - len(out)), 4)
            rr = np.sqrt(rng.uniform(0.0, 1.0, k)) * max_r * self.radius
            th = rng.uniform(0.0, 2 * np.pi, k)
            pts = self.centre + np.stack([rr * np.cos(th), rr * np.sin(th)], axis=1)
            pts = pts[np.hypot(*(pts - self.disc).T) > 1.3 * self.disc_radius]
            out = np.concatenate([out, pts])
        return out[:n]

    def sample_near(self, rng: np.random.Generator, n: int, centre: F64, spread: float) -> F64:
        """``n`` points Gaussian around ``centre`` (``spread`` in retina radii), kept inside the retina."""
        out = np.empty((0, 2))
        while len(out) < n:
            k = max(2 * (n - len(out)), 4)
            pts = centre + rng.standard_normal((k, 2)) * spread * self.radius
            inside = np.hypot(*(pts - self.centre).T) < 0.88 * self.radius
            away = np.hypot(*(pts - self.disc).T) > 1.3 * self.disc_radius
            out = np.concatenate([out, pts[inside & away]])
        return out[:n]


def make_eye(rng: np.random.Generator, size: int, difficulty: float) -> Eye:
    """Random geometry: laterality, camera rotation, framing."""
    scale = size / 128.0
    half = size / 2.0
    side = 1.0 if rng.random() < 0.5 else -1.0  # disc right (left eye) or left (right eye)
    rotation = float(rng.normal(0.0, 0.12 * difficulty))
    centre = half + rng.normal(0.0, 0.02 * difficulty, 2) * half
    radius = float(rng.uniform(0.86, 1.0)) * half
    cos, sin = np.cos(rotation), np.sin(rotation)

    def place(nx: float, ny: float) -> F64:
        p: F64 = centre + np.array([cos * nx - sin * ny, sin * nx + cos * ny]) * radius
        return p

    return Eye(
        size=size,
        scale=scale,
        centre=centre,
        radius=radius,
        disc=place(0.43 * side + rng.normal(0, 0.02), rng.normal(0, 0.04)),
        disc_radius=float(rng.uniform(0.075, 0.09)) * radius,
        macula=place(-0.04 * side + rng.normal(0, 0.02), rng.normal(0.02, 0.02)),
        rotation=rotation,
    )


def background(rng: np.random.Generator, eye: Eye, difficulty: float) -> tuple[F32, F32, F32]:
    """Retina colour ``(3, S, S)`` with illumination, texture and macula; the illumination map;
    and the squared distance from the retina centre in retina radii."""
    x, y = pixel_grid(eye.size)
    cx, cy, rad = float(eye.centre[0]), float(eye.centre[1]), eye.radius
    r2: F32 = ((x - cx) ** 2 + (y - cy) ** 2) * (1.0 / rad**2)
    pigment = rng.uniform()
    base = (1 - pigment) * np.array([0.86, 0.46, 0.22]) + pigment * np.array([0.62, 0.25, 0.11])
    base = (base * np.exp(rng.normal(0.0, 0.05, 3))).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    tilt = float(rng.uniform(0.0, 0.12 * difficulty + 0.02)) / rad
    grad = (x - cx) * (tilt * np.cos(direction)) + (y - cy) * (tilt * np.sin(direction))
    illum: F32 = 1.0 - float(rng.uniform(0.25, 0.45)) * r2 + grad
    shade = illum * (1.0 + 0.06 * smooth_noise(rng, eye.size, 8))
    mx, my = float(eye.macula[0]), float(eye.macula[1])
    mac = np.exp(((x - mx) ** 2 + (y - my) ** 2) * (-0.5 / (0.14 * rad) ** 2))
    macula_tint = np.array([0.18, 0.35, 0.3], dtype=np.float32)[:, None, None]
    rgb: F32 = (base[:, None, None] * shade[None]) * (1.0 - mac[None] * macula_tint)
    return rgb, illum, r2


def draw_disc(rng: np.random.Generator, rgb: F32, eye: Eye) -> None:
    """Pale, slightly vertically oval optic disc with a brighter cup, in place (on a crop)."""
    rx = eye.disc_radius
    ry = rx * float(rng.uniform(1.0, 1.15))
    x0, y0 = (max(int(c - ry - 2), 0) for c in eye.disc)
    x1, y1 = (min(int(c + ry + 3), eye.size) for c in eye.disc)
    if x1 <= x0 or y1 <= y0:
        return
    x, y = pixel_grid(eye.size)
    x, y = x[y0:y1, x0:x1], y[y0:y1, x0:x1]
    rho = np.sqrt(((x - float(eye.disc[0])) / rx) ** 2 + ((y - float(eye.disc[1])) / ry) ** 2)
    disc = np.clip((1.0 - rho) * (rx / 0.8) + 0.5, 0.0, 1.0)[None]
    cup = np.clip((float(rng.uniform(0.35, 0.55)) - rho) * (rx / 1.2) + 0.5, 0.0, 1.0)[None]
    pale = np.array([1.0, 0.82, 0.55], dtype=np.float32)[:, None, None] * np.float32(rng.uniform(0.85, 1.0))
    white = np.array([1.0, 0.95, 0.82], dtype=np.float32)[:, None, None]
    crop = rgb[:, y0:y1, x0:x1]
    crop += 0.85 * disc * (pale - crop)
    crop += 0.5 * cup * (white - crop)


def _children(rng: np.random.Generator, parents: list[tuple[F64, float]], s: float) -> list[tuple[F64, float]]:
    """Two to four thinner vessels leaving each parent at random points along it."""
    starts, headings, steps, widths = [], [], [], []
    for pts, width in parents:
        n = len(pts)
        if n < 20:
            continue
        m = int(rng.integers(2, 5))
        k = rng.integers(n // 6, n - 4, m)
        d = pts[k + 2] - pts[k]
        turn = rng.choice([-1.0, 1.0], m) * rng.uniform(0.5, 1.1, m)
        starts.append(pts[k])
        headings.append(np.arctan2(d[:, 1], d[:, 0]) + turn)
        steps.append(((n - k) * rng.uniform(0.4, 0.8, m)).astype(np.int64))
        widths += [width * 0.65] * m
    if not starts:
        return []
    curvature = rng.normal(0.0, 0.01, len(widths)) / s
    paths = walks(
        rng,
        np.concatenate(starts),
        np.concatenate(headings),
        np.concatenate(steps),
        0.5 * s,
        curvature,
        0.06 / s**1.5,
    )
    return list(zip(paths, widths, strict=True))


def vessel_tree(rng: np.random.Generator, eye: Eye) -> list[tuple[F64, float]]:
    """Vessels as ``(points, width_px)``: temporal arcades, nasal trunks and two levels of branches."""
    s = eye.scale
    toward = float(np.arctan2(*(eye.macula - eye.disc)[::-1]))
    dist = float(np.hypot(*(eye.macula - eye.disc)))
    sign = np.repeat([-1.0, 1.0], 4)  # superior / inferior
    temporal = np.tile([True, True, False, False], 2)
    vein = np.tile([True, False], 4)  # each vein runs beside an artery
    spread = np.where(temporal, 1.15, np.pi - 0.9) + np.where(vein, 0.0, 0.22) + rng.normal(0, 0.08, 8)
    length = dist * np.where(temporal, 2.0, 0.9) * rng.uniform(0.85, 1.1, 8)
    curvature = -sign * np.where(temporal, 1.35, -0.3) / length  # arcades bend around the macula
    trunks = walks(
        rng,
        np.tile(eye.disc, (8, 1)),
        toward + sign * spread,
        (length / (0.5 * s)).astype(np.int64),
        0.5 * s,
        curvature,
        0.05 / s**1.5,
    )
    eye.veins = [t for t, v, tm in zip(trunks, vein, temporal, strict=True) if v and tm]
    level = list(zip(trunks, (np.where(vein, 2.3, 1.7) * s).tolist(), strict=True))
    vessels = list(level)
    for _ in range(2):
        level = _children(rng, level, s)
        vessels += level
    return vessels


def render_vessels(vessels: list[tuple[F64, float]], size: int, scale: float) -> F32:
    """Opacity ``(S, S)`` of the vessel tree: lines splatted per width class, then blurred."""
    classes = (2.0 * scale, 1.0 * scale)  # trunks, branches
    groups: list[list[F64]] = [[] for _ in classes]
    for pts, width in vessels:
        groups[0 if width > 1.5 * scale else 1].append(pts)
    density = [np.zeros((size, size), np.float32) for _ in classes]
    for d, pts_list in zip(density, groups, strict=True):
        if pts_list:
            splat_points(d, np.concatenate(pts_list), 0.5 * scale)
    thick = line_opacity(density[0], max(classes[0], 0.7), strength=0.75)
    thin = line_opacity(density[1], max(classes[1], 0.7), strength=0.6)
    out: F32 = 1.0 - (1.0 - thick) * (1.0 - thin)
    return out
