"""The suite's warm launcher gives a process what a fresh interpreter gives it (`tests/launcher.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launcher import launch_code

pytestmark = pytest.mark.slow  # fresh interpreters importing torch

REPORT = """
import os, sys, torch
print(torch.get_num_threads(), os.getcwd(), sys.argv[1:], os.environ.get("QSIGHT_PROBE"))
raise SystemExit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("threads", [None, "1", "3"])
def test_a_forked_process_is_what_a_fresh_one_is(threads: str | None, tmp_path: Path) -> None:
    """Threads from OMP_NUM_THREADS (at most the cores; the fork keeps the server's otherwise), folder,
    arguments, environment and exit code. Fails on the old launcher: OMP_NUM_THREADS=1 gave two threads."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env = {**env, "QSIGHT_PROBE": "seen", **({"OMP_NUM_THREADS": threads} if threads else {})}
    fresh = subprocess.run([sys.executable, "-c", REPORT, "3", "x y"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    forked = launch_code(REPORT, "3", "x y", cwd=tmp_path, env=env).completed(120)
    assert (forked.returncode, forked.stdout) == (fresh.returncode, fresh.stdout), (forked.stderr, fresh.stderr)
    assert fresh.returncode == 3
    if threads == "1":
        assert forked.stdout.split()[0] == "1"
