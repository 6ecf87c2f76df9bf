"""Image files: cheap validity checks when a bundle is built, and loading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from qsight.data.params import ImageCheck
from qsight.errors import DataError

_JPEG_SUFFIXES = {".jpg", ".jpeg"}


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
        return "not found"
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


def _jpeg_complete(path: Path) -> bool:
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(size - 1024, 0))
        tail = fh.read().rstrip(b"\x00\r\n ")
    return tail.endswith(b"\xff\xd9")


def load_rgb(path: Path, size_hint: int | None = None) -> Image.Image:
    """The image at ``path`` as RGB; JPEGs decode at reduced scale when far larger than ``size_hint``."""
    try:
        with Image.open(path) as im:
            if size_hint is not None and im.format == "JPEG":
                im.draft("RGB", (size_hint * 2, size_hint * 2))
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc
