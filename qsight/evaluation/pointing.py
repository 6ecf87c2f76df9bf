"""The pointing game: does a map's peak fall on the lesion? And where would a random peak land?

For each sample with a lesion, the peak of its map (upsampled to the mask's size; the
first maximum on ties) hits when it lies on the lesion or within ``tolerance`` of it
(a fraction of the image's shorter side; Zhang et al. 2016 count a hit within 15 px at
224 px, :data:`ZHANG_TOLERANCE`; 0 asks for the peak pixel itself). Blank maps (no
spread: they point nowhere) are counted apart and left out, as are samples without a
lesion. The chance level is the mean area fraction of the hit region (the lesion mask
grown by the tolerance) over the scored samples: the expected hit rate of a peak put at
a uniformly random pixel. The shuffled control scores each peak against the *other* samples'
lesions (all pairs within a call): a map that points where lesions usually are, not at this
image's lesion, scores as high there as on its own image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from qsight.evaluation.render import fit_map

#: The pointing game's usual tolerance, 15 px at 224 px (Zhang et al., 2016), as a fraction of the image side.
ZHANG_TOLERANCE = 0.067


@dataclass(frozen=True)
class PointingScore:
    """One target's pointing game over a set of lesion-bearing samples."""

    hits: int
    scored: int  # lesion-bearing samples with a non-blank map
    blank: int  # lesion-bearing samples whose map is blank
    chance: float | None  # mean hit-region area fraction of the scored samples
    shuffled: float = 0.0  # summed over scored samples: share of the other samples' regions hit by its peak
    shuffled_n: int = 0  # scored samples that had others to be paired with

    @property
    def value(self) -> float | None:
        """Share of scored samples hit; None when none could be scored."""
        return self.hits / self.scored if self.scored else None

    @property
    def blank_fraction(self) -> float | None:
        """Share of lesion-bearing samples whose map is blank."""
        total = self.scored + self.blank
        return self.blank / total if total else None

    @property
    def shuffled_value(self) -> float | None:
        """Hit rate of the peaks on other samples' lesions; None without pairs."""
        return self.shuffled / self.shuffled_n if self.shuffled_n else None

    def metrics(self) -> dict[str, float]:
        """``pointing_game``, its ``_chance``, ``_shuffled`` and ``_n``, and ``gradcam_blank``, where defined."""
        found = {
            "pointing_game": self.value,
            "pointing_game_chance": self.chance,
            "pointing_game_shuffled": self.shuffled_value,
            "pointing_game_n": float(self.scored),
            "gradcam_blank": self.blank_fraction,
        }
        if self.scored + self.blank == 0:
            return {}
        return {k: float(v) for k, v in found.items() if v is not None}

    def __add__(self, other: PointingScore) -> PointingScore:
        """Scores of two disjoint sample sets, pooled."""
        total = self.scored + other.scored
        chance = None
        if total:
            chance = ((self.chance or 0.0) * self.scored + (other.chance or 0.0) * other.scored) / total
        return PointingScore(
            self.hits + other.hits,
            total,
            self.blank + other.blank,
            chance,
            self.shuffled + other.shuffled,
            self.shuffled_n + other.shuffled_n,
        )


EMPTY = PointingScore(0, 0, 0, None)


def cam_peak(cam: np.ndarray) -> tuple[int, int]:
    """(row, col) of the map's maximum (the first, on ties)."""
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(row), int(col)


def has_lesion(mask: np.ndarray | None) -> bool:
    """Whether a mask is given and marks at least one pixel."""
    return mask is not None and bool(np.asarray(mask).any())


def hit_region(mask: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """``mask`` grown by ``tolerance`` × its shorter side (pixels within that distance of a lesion)."""
    lesion = np.asarray(mask, dtype=bool)
    radius = tolerance * min(lesion.shape)
    reach = int(np.floor(radius))
    if reach < 1:
        return lesion
    offsets = np.arange(-reach, reach + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)
    return np.asarray(cv2.dilate(lesion.astype(np.uint8), disk), dtype=bool)


def score_pointing(
    cams: np.ndarray,
    masks: Sequence[np.ndarray | None],
    blank: Sequence[bool] | np.ndarray | None = None,
    tolerance: float = 0.0,
) -> PointingScore:
    """The pointing game of (B, H, W) ``cams`` against per-sample ``masks`` (None or empty: no lesion)."""
    flags = np.zeros(len(cams), dtype=bool) if blank is None else np.asarray(blank, dtype=bool)
    if not (len(cams) == len(masks) == len(flags)):
        raise ValueError(f"{len(cams)} maps, {len(masks)} masks and {len(flags)} blank flags")
    blanks = 0
    regions: list[np.ndarray] = []
    peaks: list[tuple[int, int]] = []
    for cam, mask, is_blank in zip(cams, masks, flags, strict=True):
        if mask is None or not has_lesion(mask):
            continue
        if is_blank:
            blanks += 1
            continue
        region = hit_region(mask, tolerance)
        regions.append(region)
        peaks.append(cam_peak(fit_map(cam, region.shape[0], region.shape[1])))
    if not regions:
        return PointingScore(0, 0, blanks, None)
    # hit[i, j]: sample i's peak on sample j's region (masks of one size; else only the diagonal is used)
    same_size = len({r.shape for r in regions}) == 1
    n = len(regions)
    if same_size:
        stack = np.stack(regions)
        rows, cols = np.array(peaks).T
        hit = stack[:, rows, cols].T
        hits = int(np.trace(hit))
        shuffled = float(((hit.sum(axis=1) - np.diag(hit)) / (n - 1)).sum()) if n > 1 else 0.0
    else:
        hits, shuffled = sum(bool(r[p]) for r, p in zip(regions, peaks, strict=True)), 0.0
    paired = n if same_size and n > 1 else 0
    chance = float(np.mean([r.mean() for r in regions]))
    return PointingScore(hits, n, blanks, chance, shuffled, paired)
