"""One ``.tar.gz`` per run: the run folder under ``<experiment>/<run-id>/`` plus a manifest.

Extracting the archive into ``<reports root>/runs`` puts the run back where it was. The
manifest (``<experiment>/<run-id>/archive.json``) lists every file with its size and SHA-256
next to the run's status, spec name and qsight version, so a restore can be checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from qsight.errors import BadInputError
from qsight.runs.folder import RunFolder
from qsight.runs.layout import LOCK, atomic_writer

MANIFEST = "archive.json"
SUFFIXES = (".tar.gz", ".tgz")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _members(run: RunFolder) -> list[Path]:
    return sorted(p for p in run.path.rglob("*") if p.is_file() and not p.is_symlink() and p.name != LOCK)


def manifest(run: RunFolder, files: list[Path]) -> dict[str, Any]:
    """Run metadata and the archived files (relative path, bytes, sha256)."""
    return {
        "experiment": run.experiment,
        "run_id": run.run_id,
        "status": run.status,
        "archived": datetime.now(UTC).isoformat(timespec="seconds"),
        "qsight": version("qsight"),
        "files": {str(p.relative_to(run.path)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }


class ArchiveTargetError(BadInputError):
    """The archive cannot be written there; `exists` when only an existing file (not forced) is in the way."""

    def __init__(self, message: str, *, exists: bool = False) -> None:
        super().__init__(message)
        self.exists = exists


def check_target(to: Path, force: bool) -> None:
    """The archive path must end in .tar.gz/.tgz, sit in an existing folder, and not exist unless forced."""
    if not to.name.endswith(SUFFIXES):
        raise ArchiveTargetError(f"{to}: the archive name must end in .tar.gz or .tgz")
    if not to.parent.is_dir():
        raise ArchiveTargetError(f"{to}: folder {to.parent} does not exist")
    if to.exists() and not force:
        raise ArchiveTargetError(f"{to}: the file exists", exists=True)


def archive_run(run: RunFolder, to: Path, *, force: bool = False) -> dict[str, Any]:
    """Write the archive (atomically: a temporary file, then a rename); returns the manifest."""
    check_target(to, force)
    if run.status == "running":
        raise BadInputError(f"{run.path}: the run is still running; archive it when it has ended")
    files = _members(run)
    meta = manifest(run, files)
    base = f"{run.experiment}/{run.run_id}"
    with atomic_writer(to, "wb") as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:
        for path in files:
            tar.add(path, arcname=f"{base}/{path.relative_to(run.path)}", recursive=False)
        data = (json.dumps(meta, indent=2) + "\n").encode()
        info = tarfile.TarInfo(f"{base}/{MANIFEST}")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return meta
