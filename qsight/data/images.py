"""Image files: cheap validity checks when a bundle is built, and loading.

High-bit-depth images are scaled by the range of their pixel type, never
clipped: 16-bit grayscale (PIL modes ``I;16*``, and ``I``, 32-bit integer, as
PIL hands 16-bit data over in it) map 0..65535 to 0..255, values above 65535
saturating; 32-bit float (``F``) is taken as 0..1. The scale is fixed per
pixel type, not per image, so every image keeps its brightness relative to
the others. 16-bit RGB(A) PNGs are reduced to 8 bits by PIL itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from qsight.data.params import ImageCheck
from qsight.errors import DataError

_JPEG_SUFFIXES = {".jpg", ".jpeg"}
#: PIL mode -> the pixel value that maps to white (modes PIL's own convert("RGB") would clip).
HIGH_BIT_WHITE: dict[str, float] = {
    "I;16": 65535.0,
    "I;16L": 65535.0,
    "I;16B": 65535.0,
    "I;16N": 65535.0,
    "I": 65535.0,
    "F": 1.0,
}


@dataclass(frozen=True)
class Sample:
    """One labelled image file; ``ref`` says where it was listed (for error messages)."""

    path: Path
    label: int
    ref: str


def image_problem(path: Path, check: ImageCheck) -> str | None:
    """Why ``path`` is not a usable image, or None.

    ``header`` opens the file and runs PIL's ``verify`` (PNG chunks and CRCs,
    JPEG markers) plus a JPEG end-of-image check that catches truncation;
    ``decode`` decodes every pixel; ``none`` only checks the file exists.
    """
    if not path.is_file():
        return missing_reason(path)
    if check == "none":
        return None
    try:
        with Image.open(path) as im:
            if check == "decode":
                im.load()
            else:
                im.verify()
        if check == "header" and path.suffix.lower() in _JPEG_SUFFIXES and not _jpeg_complete(path):
            return "truncated JPEG (no end-of-image marker)"
    except UnidentifiedImageError:
        return "not a readable image"
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports corrupt data through these
        return f"unreadable image ({exc})"
    return None


def missing_reason(path: Path) -> str:
    """Why ``path``, which is not a regular file, cannot be read."""
    if path.is_symlink() and not path.exists():
        return f"is a link to a missing file ({os.readlink(path)})"
    return "not found" if not path.exists() else "is not a file"


def _jpeg_complete(path: Path) -> bool:
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(size - 1024, 0))
        tail = fh.read().rstrip(b"\x00\r\n ")
    return tail.endswith(b"\xff\xd9")


def load_rgb(path: Path, size_hint: int | None = None) -> Image.Image:
    """The image at ``path`` as 8-bit RGB; JPEGs decode at reduced scale when far larger than ``size_hint``."""
    try:
        with Image.open(path) as im:
            if size_hint is not None and im.format == "JPEG":
                im.draft("RGB", (size_hint * 2, size_hint * 2))
            if im.mode in HIGH_BIT_WHITE:
                return to_8bit(im).convert("RGB")
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc


def to_8bit(im: Image.Image) -> Image.Image:
    """A single-channel high-bit-depth image as 8-bit grayscale, scaled by ``HIGH_BIT_WHITE`` of its mode."""
    values = np.nan_to_num(np.asarray(im, dtype=np.float64)) * (255.0 / HIGH_BIT_WHITE[im.mode])
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
