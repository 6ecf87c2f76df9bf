"""A confusion matrix drawn as a PNG with Pillow: row shares as colour, counts and shares as text.

Drawn directly rather than through matplotlib's figure machinery: a run draws one per head at every
validation epoch, and matplotlib took ~0.35 s each (the flagship draws about 60, a 110-epoch stage
hundreds); this takes a few milliseconds. Colours are matplotlib's "Blues" map and the font its DejaVu
Sans, so the images read like the rest of the run's figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, lru_cache

import matplotlib
import numpy as np
from matplotlib.colors import Colormap
from PIL import Image, ImageDraw

from qsight.evaluation.fonts import Font, font_of, text_size

CELL = 58  # pixels per cell
PAD = 10
BAR_WIDTH = 14
Colour = tuple[int, int, int]


@cache
def _blues() -> Colormap:
    return matplotlib.colormaps["Blues"]  # a fresh copy (and lookup table) on every lookup: keep one


def _colour(share: float) -> Colour:
    r, g, b, _ = _blues()(float(share))
    return int(r * 255), int(g * 255), int(b * 255)


@lru_cache(maxsize=256)  # the same labels every epoch; callers only paste the tile
def _text_image(text: str, font: Font, angle: float) -> Image.Image:
    """`text` in black on a transparent tile, turned by `angle` degrees (counter-clockwise)."""
    width, height = text_size(text, font)
    tile = Image.new("RGBA", (width + 4, height + 6), (255, 255, 255, 0))
    ImageDraw.Draw(tile).text((2, 0), text, fill=(0, 0, 0, 255), font=font)
    return tile.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC) if angle else tile


def draw_confusion(counts: np.ndarray, shares: np.ndarray, class_names: Sequence[str], title: str) -> Image.Image:
    """The heat map of `shares` (C, C) annotated with `counts`, rows true classes, columns predicted."""
    n = len(class_names)
    label, small = font_of(12), font_of(11)
    x_labels = [_text_image(name, label, 45) for name in class_names]
    y_width = max((text_size(name, label)[0] for name in class_names), default=0)
    overhang = max((t.width - 6 - i * CELL - CELL // 2 for i, t in enumerate(x_labels)), default=0)
    left = max(PAD + 18 + y_width + 6, PAD + overhang)  # room for "true" and the names of both axes
    top = PAD + text_size(title, font_of(13))[1] + 10
    grid = n * CELL
    bottom = top + grid + 4 + max((t.height for t in x_labels), default=0) + 20
    bar_left = left + grid + 16
    image = Image.new("RGB", (bar_left + BAR_WIDTH + 70, bottom + PAD), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left + grid / 2, PAD), title, fill="black", font=font_of(13), anchor="ma")
    for (row, col), count in np.ndenumerate(counts):
        share = float(shares[row, col])
        x0, y0 = left + col * CELL, top + row * CELL
        draw.rectangle((x0, y0, x0 + CELL - 1, y0 + CELL - 1), fill=_colour(share))
        ink = "white" if share > 0.5 else "black"
        draw.multiline_text((x0 + CELL / 2, y0 + CELL / 2), f"{count}\n{share:.0%}", fill=ink, font=small,
                            anchor="mm", align="center")
    draw.rectangle((left - 1, top - 1, left + grid, top + grid), outline="black")
    for i, name in enumerate(class_names):
        centre = top + i * CELL + CELL / 2
        draw.text((left - 6, centre), name, fill="black", font=label, anchor="rm")
        tile = x_labels[i]
        image.paste(tile, (int(left + i * CELL + CELL / 2 - tile.width + 6), top + grid + 4), tile)
    draw.text((left + grid / 2, bottom - 4), "predicted", fill="black", font=label, anchor="md")
    side = _text_image("true", label, 90)
    image.paste(side, (PAD, int(top + grid / 2 - side.height / 2)), side)
    _colour_bar(image, draw, bar_left, top, grid)
    return image


@lru_cache(maxsize=16)
def _bar(height: int) -> Image.Image:
    ramp = _blues()(np.linspace(1.0, 0.0, height))[:, :3]
    return Image.fromarray(np.repeat((ramp * 255).astype(np.uint8)[:, None, :], BAR_WIDTH, axis=1))


def _colour_bar(image: Image.Image, draw: ImageDraw.ImageDraw, x: int, top: int, height: int) -> None:
    image.paste(_bar(height), (x, top))
    draw.rectangle((x - 1, top - 1, x + BAR_WIDTH, top + height), outline="black")
    for value in (0.0, 0.5, 1.0):
        y = top + (1.0 - value) * (height - 1)
        draw.line((x + BAR_WIDTH, y, x + BAR_WIDTH + 3, y), fill="black")
        draw.text((x + BAR_WIDTH + 6, y), f"{value:.1f}", fill="black", font=font_of(11), anchor="lm")
    side = _text_image("share of true class", font_of(11), 90)
    image.paste(side, (x + BAR_WIDTH + 32, int(top + height / 2 - side.height / 2)), side)
