"""The fonts of qsight's pictures: matplotlib's DejaVu Sans, at a size, or shrunk to fit a width."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_SCRATCH = Image.new("L", (1, 1))  # measures text


@cache
def font_of(size: int) -> Font:
    """DejaVu Sans at `size` pixels (Pillow's own font where Pillow has no FreeType)."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default()


def text_size(text: str, font: Font) -> tuple[int, int]:
    """(width, height) in pixels of `text` (lines included) in `font`."""
    left, top, right, bottom = ImageDraw.Draw(_SCRATCH).multiline_textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def fit_font(text: str, width: int, size: int, smallest: int = 7) -> Font:
    """The largest font from `size` down to `smallest` in which `text` is at most `width` pixels wide."""
    for s in range(size, smallest, -1):
        if text_size(text, font_of(s))[0] <= width:
            return font_of(s)
    return font_of(smallest)

