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


NAN_PLUGIN = """
import torch
from pydantic import Field
from qsight.components import HEADS
from qsight.models.params import HeadParams


class NanAfterParams(HeadParams):
    after: int = Field(2, ge=0, description="training calls before the logits turn NaN")


class NanAfter(torch.nn.Module):
    def __init__(self, p, in_dim, num_classes):
        super().__init__()
        self.linear, self.after, self.calls = torch.nn.Linear(in_dim, num_classes), p.after, 0

    def forward(self, x):
        self.calls += int(self.training)
        out = self.linear(x)
        return out * float("nan") if self.calls > self.after else out


def register():
    HEADS.add("nan-after", NanAfter, params=NanAfterParams, summary="turns NaN after some training calls")
"""


def install_nan_plugin(root: Path) -> dict[str, str]:
    """A real plugin distribution (dist-info + entry point); returns the env that puts it on the path."""
    pkg = root / "qsight_nan_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(NAN_PLUGIN)
    info = root / "qsight_nan_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qsight-nan-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[qsight.components]\nnan = qsight_nan_plugin:register\n")
    return {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
