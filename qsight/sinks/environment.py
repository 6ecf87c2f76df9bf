"""What a run ran on: package versions, platform, git state, devices."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "qsight", "torch", "torchvision", "timm", "qiskit", "qiskit-aer", "qiskit-machine-learning",
    "qiskit-ibm-runtime", "optuna", "mlflow", "wandb", "numpy", "pydantic",
)  # fmt: skip


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when absent), without importing it."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state(cwd: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the repository holding `cwd`; None outside a repository."""
    commit = _git(["rev-parse", "HEAD"], cwd)
    if not commit:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {"commit": commit, "dirty": bool(status), "root": _git(["rev-parse", "--show-toplevel"], cwd)}


def devices() -> dict[str, Any]:
    """CUDA availability and device names (torch imported only if installed)."""
    try:
        import torch
    except ImportError:
        return {"cuda": False, "torch": False, "names": []}
    cuda = bool(torch.cuda.is_available())
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {
        "cuda": cuda,
        "cuda_version": torch.version.cuda,
        "count": len(names),
        "names": names,
        "cpu_threads": torch.get_num_threads(),
    }


def collect_environment(
    seed: int | None, extra: Mapping[str, Any] | None = None, cwd: Path | None = None
) -> dict[str, Any]:
    """The content of environment.json."""
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": package_versions(),
        "git": git_state(cwd or Path.cwd()),
        "seed": seed,
        "devices": devices(),
        "extra": dict(extra or {}),
    }
