"""Free disk space in finished runs: per-epoch visualizations and intermediate checkpoints.

Always kept: spec.toml, environment.json, metrics.jsonl, summary.json, ``checkpoints/best.pt``
and ``checkpoints/last.pt``, and the visualizations of the epochs asked for (best and/or last
of each stage). Running and interrupted runs (which may still be resumed) are never touched.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from qsight.errors import BadInputError
from qsight.runs.folder import RunFolder

KEEP_CHOICES = ("best", "last")
ALWAYS_KEPT_CHECKPOINTS = ("best.pt", "last.pt")
_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_keep(text: str) -> frozenset[str]:
    """``best,last`` → {"best", "last"}; an unknown word is bad input naming the text."""
    words = {w.strip() for w in text.split(",") if w.strip()}
    unknown = sorted(words - set(KEEP_CHOICES))
    if unknown or not words:
        raise BadInputError(f"{text!r}: expected a comma list of {', '.join(KEEP_CHOICES)}")
    return frozenset(words)


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``, ``90m`` → a timedelta; anything else is bad input."""
    match = _AGE.match(text.strip().lower())
    if not match:
        raise BadInputError(f"{text!r}: expected an age, a number and a unit m, h, d or w (e.g. 30d)")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


@dataclass
class PrunePlan:
    """What pruning one run removes (or would remove), and why a run is skipped."""

    run: RunFolder
    remove: list[Path] = field(default_factory=list)
    freed: int = 0
    skipped: str = ""


def plan_prune(run: RunFolder, keep: frozenset[str]) -> PrunePlan:
    """The folders and files of `run` that pruning removes; kept epochs and files are never listed."""
    plan = PrunePlan(run)
    if not run.finished:
        plan.skipped = f"{run.status}: may still be resumed"
        return plan
    dirs = run.epoch_dirs()
    for stage in run.stage_epochs():
        wanted = {e for e in (stage.best if "best" in keep else None, stage.last if "last" in keep else None) if e}
        plan.remove += [path for name, epoch, path in dirs if name == stage.name and epoch not in wanted]
    plan.remove += _intermediate_checkpoints(run, keep)
    plan.freed = sum(_size(p) for p in plan.remove)
    return plan


def _intermediate_checkpoints(run: RunFolder, keep: frozenset[str]) -> list[Path]:
    """Checkpoint files other than best.pt and last.pt; stage-end ones are kept with ``last``."""
    folder = run.layout.checkpoints
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        if path.name in ALWAYS_KEPT_CHECKPOINTS or not path.is_file():
            continue
        if "last" in keep and path.name.startswith("stage-") and path.suffix == ".pt":
            continue
        out.append(path)
    return out


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def older_than(runs: Iterable[RunFolder], age: timedelta | None, now: datetime | None = None) -> list[RunFolder]:
    """The runs that started at least `age` ago (all of them when `age` is None)."""
    if age is None:
        return list(runs)
    cutoff = (now or datetime.now(UTC)) - age
    return [r for r in runs if r.started is not None and r.started <= cutoff]


def apply_prune(plans: Sequence[PrunePlan]) -> int:
    """Remove what the plans list; returns the bytes freed."""
    freed = 0
    for plan in plans:
        for path in plan.remove:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        freed += plan.freed
    return freed


def format_bytes(n: int) -> str:
    """``512 B``, ``3.4 KiB``, ``12.0 MiB``, ``1.2 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
