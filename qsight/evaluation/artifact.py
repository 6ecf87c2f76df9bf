"""Files written by evaluation and handed on to the sinks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ArtifactKind = Literal["image", "table"]


@dataclass(frozen=True)
class Artifact:
    """One file already written to the run folder: a PNG (``image``) or a CSV (``table``)."""

    kind: ArtifactKind
    key: str  # e.g. "confusion/ensemble", "confidence", "gradcam/collage"
    path: Path


def safe_name(text: str) -> str:
    """``text`` reduced to characters safe in a file name (letters, digits, ``.-_``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "_"
