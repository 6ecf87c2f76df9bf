"""Runs that are killed and resumed, and runs split over processes, end where a plain run ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import KILL_POINTS, cli, copy_run, summary, tiny_spec, torchrun, val_metrics


@pytest.mark.slow
@pytest.mark.parametrize("ready", KILL_POINTS)
def test_resume_after_a_kill_ends_with_the_same_metrics(
    tmp_path: Path, ready: str, killed_runs: dict[str, Path], long_run: Path
) -> None:
    """The long run killed right after writing checkpoint `ready`, resumed, ends as the run that went on."""
    run_dir = copy_run(killed_runs[ready], tmp_path / "killed")
    assert not (run_dir / "summary.json").exists() or summary(run_dir)["status"] != "completed"
    res = cli("run", "--resume", str(run_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    assert summary(run_dir)["status"] == "completed"
    assert val_metrics(run_dir) == val_metrics(long_run)


@pytest.mark.slow
def test_resume_refuses_overrides_and_missing_checkpoints(tmp_path: Path) -> None:
    res = cli("run", "--resume", str(tmp_path))
    assert res.returncode == 2 and "not a qsight run folder" in res.stderr
    (tmp_path / "spec.toml").write_text("")
    res = cli("run", "--resume", str(tmp_path))
    assert res.returncode == 2 and "no checkpoints/last.pt" in res.stderr
    res = cli("run", "--resume", str(tmp_path), "--set", "seed=1")
    assert res.returncode == 2 and "no overrides" in res.stderr


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_over_the_same_global_batch(tmp_path: Path, reports_root: Path) -> None:
    """torchrun with 2 CPU processes (gloo) gives the metrics of one process.

    Augmentation is seeded per sample, so both see the same images; dropout masks and the
    quantum head's angle noise are drawn for the global batch, so both draw what one process
    draws. The backbone (ReLU kinks: see test_ddp_equivalence) is frozen, so 1e-5 holds.
    """
    spec = tiny_spec(tmp_path, reports=reports_root, stages__0__epochs=1,
                     stages__0__train=["neck", "heads.global", "heads.compressed", "combiner"])
    plain = tmp_path / "plain"
    res = cli("run", str(spec), "--run-dir", str(plain))
    assert res.returncode == 0, res.stderr[-2000:]
    expected = val_metrics(plain)
    run_dir = tmp_path / "ddp"
    res = torchrun("run", str(spec), "--run-dir", str(run_dir), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = val_metrics(run_dir)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
