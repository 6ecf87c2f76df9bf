"""Issue 12: resume guards, output places, early backbone checks, logging and dry-run markers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qsight.errors import BadInputError
from qsight.experiment.launch import resolve_run
from qsight.runs.layout import write_lock
from tests.helpers import ROOT, cli, tiny_spec

SMOKE = ROOT / "experiments" / "smoke.toml"


def _fake_run(tmp: Path, **changes: object) -> tuple[Path, Path]:
    """A run folder as a killed run leaves it: spec.toml and checkpoints/last.pt (content unread here)."""
    spec = tiny_spec(tmp, **changes)  # type: ignore[arg-type]
    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(spec, run / "spec.toml")
    (run / "checkpoints" / "last.pt").write_bytes(b"not read before the guards")
    return spec, run


def test_resume_refuses_a_live_run(tmp_path: Path) -> None:
    _, run = _fake_run(tmp_path)
    write_lock(run)  # held by this (living) process
    with pytest.raises(BadInputError, match=f"still going \\(pid {os.getpid()}"):
        resolve_run(None, [], None, run)
    res = cli("run", "--resume", str(run))
    assert res.returncode == 2 and "still going" in res.stderr and "Traceback" not in res.stderr


def test_resume_refuses_a_completed_run_and_accepts_an_interrupted_one(tmp_path: Path) -> None:
    _, run = _fake_run(tmp_path)
    lock = json.loads((write_lock(run), (run / "run.lock").read_text())[1])
    (run / "run.lock").write_text(json.dumps({**lock, "pid": 2**22 + 4321}))  # its process is gone
    spec, folder, resuming = resolve_run(None, [], None, run)
    assert resuming and folder == run and spec.name == "tiny"
    (run / "run.lock").unlink()
    (run / "summary.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(BadInputError, match="has completed"):
        resolve_run(None, [], None, run)


def test_resume_with_a_different_spec_names_the_keys(tmp_path: Path) -> None:
    spec, run = _fake_run(tmp_path)
    assert resolve_run(spec, [], None, run)[2]  # the same spec is fine
    (tmp_path / "other").mkdir()
    other = tiny_spec(tmp_path / "other", stages__0__epochs=5, seed=3)
    with pytest.raises(BadInputError) as info:
        resolve_run(other, [], None, run)
    assert "stages.0.epochs" in str(info.value) and "seed" in str(info.value)
    assert "output.root" in str(info.value)  # it differs too: every differing key is named


@pytest.mark.slow
def test_output_places_that_are_files_are_refused_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    spec = tiny_spec(tmp_path)
    for args in (["--set", f'output.root="{blocker}"'], ["--set", f'output.root="{blocker}/sub"'],
                 ["--run-dir", str(blocker)]):
        res = cli("run", str(spec), *args)
        assert res.returncode == 2, res.stderr
        assert "is a file" in res.stderr or "not empty" in res.stderr or "cannot write" in res.stderr
        assert "Traceback" not in res.stderr
    assert blocker.read_text() == "x"


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_read_only_output_root_is_bad_input(tmp_path: Path) -> None:
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    if os.geteuid() != 0 or not _mount("--bind", "-o", "ro", str(src), str(ro)):
        pytest.skip("needs root with mount rights to make a read-only bind mount")
    try:
        with pytest.raises(BadInputError, match="cannot write there"):
            resolve_run(tiny_spec(tmp_path), [f'output.root="{ro}/reports"'], None, None)
    finally:
        subprocess.run(["umount", str(ro)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"model.backbone": '{type="timm", name="resnet5000"}'}, "unknown timm model 'resnet5000'"),
        ({"model.backbone": '{type="timm", name="deit_tiny_patch16_224"}'}, "does not take 32×32 images"),
    ],
)
def test_validate_probes_the_backbone_before_any_data(changes: dict[str, str], expected: str, tmp_path: Path) -> None:
    sets = [a for k, v in changes.items() for a in ("--set", f"{k}={v}")]
    res = cli("validate", str(SMOKE), *sets)
    assert res.returncode == 2 and expected in res.stderr, res.stderr
    assert "model.backbone" in res.stderr and "Traceback" not in res.stderr
    run = cli("run", str(tiny_spec(tmp_path)), *sets)
    assert run.returncode == 2 and expected in run.stderr
    assert not (tmp_path / "reports" / "cache").exists()  # refused before the data was built


@pytest.mark.slow
def test_verbosity_and_version() -> None:
    quiet = cli("validate", str(SMOKE))
    assert quiet.returncode == 0 and "INFO" not in quiet.stderr
    loud = cli("-v", "validate", str(SMOKE))
    assert loud.returncode == 0 and "INFO qsight.models: backbone tiny-cnn takes 32×32 images" in loud.stderr
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("qsight ")


@pytest.mark.slow
def test_dry_run_is_marked_and_logged(tmp_path: Path) -> None:
    folder = tmp_path / "dry"
    res = cli("run", str(tiny_spec(tmp_path)), "--run-dir", str(folder), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "INFO" not in res.stderr and "mlflow.store" not in res.stderr
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["status"] == "completed"
    log = (folder / "run.log").read_text()
    assert "starting run dry" in log and "stage quantum starts" in log
    listed = json.loads(cli("runs", "list", "--root", str(tmp_path / "dry"), "--format", "json").stdout)
    assert listed[0]["dry_run"] is True


@pytest.mark.slow
def test_a_full_disk_fails_cleanly_and_the_run_resumes(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", "size=1100k", "tmpfs", str(disk)):
        pytest.skip("needs root with mount rights to make a small tmpfs")
    try:
        folder = disk / "run"
        spec = tiny_spec(tmp_path, output__root=str(disk), stages__1__epochs=4)
        res = cli("run", str(spec), "--run-dir", str(folder))
        assert res.returncode == 1, res.stderr
        assert "No space left on device" in res.stderr and "Traceback" not in res.stderr
        assert res.stderr.count("run failed") == 1
        assert not (folder / "run.lock").exists()
        summary = folder / "summary.json"
        if summary.exists():
            assert json.loads(summary.read_text())["status"] == "failed"
        else:
            assert "summary.json could not be written" in res.stderr
        assert (folder / "checkpoints" / "last.pt").is_file()
        assert subprocess.run(["mount", "-o", "remount,size=64m", str(disk)]).returncode == 0
        again = cli("run", "--resume", str(folder))
        assert again.returncode == 0, again.stderr
        assert json.loads(summary.read_text())["status"] == "completed"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_resume_trims_metric_lines_after_its_checkpoint_and_the_test_line(tmp_path: Path) -> None:
    """The lines a resumed run keeps: stages before its checkpoint's, and that stage up to its epoch.
    The test split's line (stage "test", epoch null: written after every stage) goes: a run killed after
    it resumes from its last epoch and writes it again. Fails on the old code: TypeError on the null epoch."""
    from qsight.config.toml_io import load_spec
    from qsight.experiment.launch import trim_metrics

    spec_path, run = _fake_run(tmp_path)
    spec = load_spec(spec_path)
    names = [s.name for s in spec.stages]
    assert len(names) >= 2, names
    lines = [
        {"stage": names[0], "epoch": 1, "step": 1},
        {"stage": names[0], "epoch": 2, "step": 2},
        {"stage": names[1], "epoch": 1, "step": 3},
        {"stage": names[1], "epoch": 2, "step": 4},
        {"stage": "test", "epoch": None, "step": 4},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"cut sh')
    trim_metrics(run, spec, stage_index=1, epoch=1)
    kept = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kept == lines[:3]
