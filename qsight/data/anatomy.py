"""The healthy fundus of the synthetic generator: retina, optic disc, macula, vessel tree."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from qsight.data.draw import F32, F64, line_opacity, smooth_noise, splat_points, walk

# Per-channel darkening (R, G, B) of blood over the retina: mostly green/blue.
VESSEL_TINT = np.array([0.45, 0.78, 0.72], dtype=np.float32)[:, None, None]


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


def background(rng: np.random.Generator, eye: Eye, difficulty: float) -> tuple[F32, F32]:
    """Retina colour ``(3, S, S)`` with illumination, texture and macula; and the illumination map."""
    x, y = pixel_grid(eye.size)
    r2 = ((x - eye.centre[0]) ** 2 + (y - eye.centre[1]) ** 2) / eye.radius**2
    pigment = rng.uniform()
    base = (1 - pigment) * np.array([0.86, 0.46, 0.22]) + pigment * np.array([0.62, 0.25, 0.11])
    base = (base * np.exp(rng.normal(0.0, 0.05, 3))).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    tilt = rng.uniform(0.0, 0.12 * difficulty + 0.02)
    grad = ((x - eye.centre[0]) * np.cos(direction) + (y - eye.centre[1]) * np.sin(direction)) / eye.radius
    illum = (1.0 - rng.uniform(0.25, 0.45) * r2 + tilt * grad).astype(np.float32)
    texture = 1.0 + 0.05 * smooth_noise(rng, eye.size, 7) + 0.02 * smooth_noise(rng, eye.size, 19)
    rgb: F32 = base[:, None, None] * (illum * texture)[None]
    mac2 = ((x - eye.macula[0]) ** 2 + (y - eye.macula[1]) ** 2) / (0.14 * eye.radius) ** 2
    mac = np.exp(-0.5 * mac2)
    rgb *= 1.0 - mac[None] * np.array([0.18, 0.35, 0.3], dtype=np.float32)[:, None, None]
    return rgb, illum


def draw_disc(rng: np.random.Generator, rgb: F32, eye: Eye) -> None:
    """Pale, slightly vertically oval optic disc with a brighter cup, in place."""
    x, y = pixel_grid(eye.size)
    rx = eye.disc_radius
    ry = rx * rng.uniform(1.0, 1.15)
    rho = np.sqrt(((x - eye.disc[0]) / rx) ** 2 + ((y - eye.disc[1]) / ry) ** 2)
    disc = np.clip((1.0 - rho) * rx / 0.8 + 0.5, 0.0, 1.0)
    cup = np.clip((rng.uniform(0.35, 0.55) - rho) * rx / 1.2 + 0.5, 0.0, 1.0)
    pale = np.array([1.0, 0.82, 0.55], dtype=np.float32)[:, None, None] * rng.uniform(0.85, 1.0)
    white = np.array([1.0, 0.95, 0.82], dtype=np.float32)[:, None, None]
    rgb *= 1.0 - 0.85 * disc[None]
    rgb += 0.85 * disc[None] * pale
    rgb += 0.5 * cup[None] * (white - rgb)


def _branches(
    rng: np.random.Generator, parent: F64, width: float, depth: int, scale: float
) -> list[tuple[F64, float]]:
    """Child vessels leaving ``parent`` at random points, recursively."""
    out: list[tuple[F64, float]] = []
    if depth == 0 or len(parent) < 20:
        return out
    for _ in range(int(rng.integers(2, 5))):
        k = int(rng.integers(len(parent) // 6, len(parent) - 4))
        d = parent[k + 2] - parent[k]
        heading = float(np.arctan2(d[1], d[0])) + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
        steps = int((len(parent) - k) * rng.uniform(0.4, 0.8))
        child = walk(rng, parent[k], heading, steps, 0.5 * scale, rng.normal(0, 0.01) / scale, 0.06 / scale**1.5)
        out.append((child, width * 0.65))
        out.extend(_branches(rng, child, width * 0.65, depth - 1, scale))
    return out


def vessel_tree(rng: np.random.Generator, eye: Eye) -> list[tuple[F64, float]]:
    """Vessels as ``(points, width_px)``: temporal arcades, nasal trunks and their branches."""
    s = eye.scale
    toward = float(np.arctan2(*(eye.macula - eye.disc)[::-1]))
    dist = float(np.hypot(*(eye.macula - eye.disc)))
    vessels: list[tuple[F64, float]] = []
    for sign in (-1.0, 1.0):
        for kind, (spread, reach, bend) in {
            "temporal": (1.25, 2.0, 2.1),
            "nasal": (np.pi - 0.9, 0.9, 0.3),
        }.items():
            for vein, offset in ((True, 0.0), (False, 0.22)):
                angle = toward + sign * (spread + offset + rng.normal(0, 0.08))
                length = dist * reach * rng.uniform(0.85, 1.1)
                steps = int(length / (0.5 * s))
                curvature = -sign * bend / length * (1 if kind == "temporal" else -1)
                pts = walk(rng, eye.disc, angle, steps, 0.5 * s, curvature, 0.05 / s**1.5)
                width = (2.3 if vein else 1.7) * s
                vessels.append((pts, width))
                if vein and kind == "temporal":
                    eye.veins.append(pts)
                vessels.extend(_branches(rng, pts, width, 2, s))
    return vessels


def render_vessels(vessels: list[tuple[F64, float]], size: int, scale: float) -> F32:
    """Opacity ``(S, S)`` of the vessel tree: lines splatted per width class, then blurred."""
    classes = (2.0 * scale, 1.3 * scale, 0.8 * scale)
    maps = [np.zeros((size, size), np.float32) for _ in classes]
    for pts, width in vessels:
        k = int(np.argmin([abs(width - c) for c in classes]))
        splat_points(maps[k], pts, 0.5 * scale)
    opacity = np.zeros((size, size), np.float32)
    for m, w in zip(maps, classes, strict=True):
        op = line_opacity(m, max(w, 0.7), strength=0.75 if w > 1.5 * scale else 0.6)
        opacity = 1.0 - (1.0 - opacity) * (1.0 - op)
    return opacity


def draw_vessels(rgb: F32, opacity: F32) -> None:
    """Darken the retina under the vessels (blood absorbs green and blue), in place."""
    rgb *= 1.0 - opacity[None] * VESSEL_TINT
