"""Runs that are killed and resumed, and runs split over processes, end where a plain run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runs import ROOT, cli, summary, tiny_spec, val_metrics


def _uninterrupted(tmp: Path, spec: Path) -> dict[str, float]:
    run_dir = tmp / "plain"
    res = cli("run", str(spec), "--run-dir", str(run_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    return val_metrics(run_dir)


def _kill_when(run_dir: Path, spec: Path, ready: str) -> None:
    """Start a run and SIGKILL it once checkpoint file `ready` exists."""
    proc = subprocess.Popen([sys.executable, "-m", "qsight", "run", str(spec), "--run-dir", str(run_dir)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ck = run_dir / "checkpoints"
    while proc.poll() is None and time.time() < deadline:
        if (ck / ready).is_file():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """A spec and the metrics of its uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    spec = tiny_spec(tmp, stages__0__epochs=2, stages__1__epochs=3)
    return spec, _uninterrupted(tmp, spec)


@pytest.mark.parametrize("ready", ["last.pt", "stage-classical.pt", "stage-quantum.pt"])
def test_resume_after_sigkill_ends_with_the_same_metrics(
    tmp_path: Path, ready: str, reference: tuple[Path, dict[str, float]]
) -> None:
    spec, expected = reference
    run_dir = tmp_path / "killed"
    _kill_when(run_dir, spec, ready)
    assert not (run_dir / "summary.json").exists() or summary(run_dir)["status"] != "completed"
    res = cli("run", "--resume", str(run_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    assert summary(run_dir)["status"] == "completed"
    assert val_metrics(run_dir) == expected


def test_resume_refuses_overrides_and_missing_checkpoints(tmp_path: Path) -> None:
    res = cli("run", "--resume", str(tmp_path))
    assert res.returncode == 2 and "not a qsight run folder" in res.stderr
    (tmp_path / "spec.toml").write_text("")
    res = cli("run", "--resume", str(tmp_path))
    assert res.returncode == 2 and "no checkpoints/last.pt" in res.stderr
    res = cli("run", "--resume", str(tmp_path), "--set", "seed=1")
    assert res.returncode == 2 and "drop --set" in res.stderr


def test_two_process_ddp_matches_one_process_over_the_same_global_batch(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo) gives the metrics of one process.

    Augmentation is seeded per sample, so both see the same images; dropout masks and the
    quantum head's angle noise are drawn for the global batch, so both draw what one process
    draws. The backbone (ReLU kinks: see test_ddp_equivalence) is frozen, so 1e-5 holds.
    """
    spec = tiny_spec(tmp_path, stages__0__train=["neck", "heads.global", "heads.compressed", "combiner"])
    expected = _uninterrupted(tmp_path, spec)
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "qsight", "run", str(spec), "--run-dir", str(run_dir)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    got = val_metrics(run_dir)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
