"""Helpers for tests that run qsight end to end: tiny specs and CLI subprocesses."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parents[1]


def smoke_raw() -> dict[str, Any]:
    with (ROOT / "experiments" / "smoke.toml").open("rb") as fh:
        return tomllib.load(fh)


def tiny_spec(tmp: Path, *, sinks: bool = False, name: str = "tiny", **changes: Any) -> Path:
    """The smoke spec without remote sinks (unless asked), its output under `tmp`."""
    raw = copy.deepcopy(smoke_raw())
    raw["name"] = name
    raw["output"] = {"root": str(tmp / "reports")}
    if not sinks:
        raw.pop("sinks", None)
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[int(last) if isinstance(node, list) else last] = value
    path = tmp / f"{name}.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qsight", *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, **(env or {})}, timeout=timeout,
    )


def summary(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return data


def val_metrics(run_dir: Path) -> dict[str, float]:
    return {k: v for k, v in summary(run_dir)["final"].items() if k.startswith("val/")}
