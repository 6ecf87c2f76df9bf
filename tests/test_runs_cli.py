"""`qsight runs list|compare|prune|archive` on real run folders made by the smoke spec."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import cli, cli_json, copy_run, metric_lines, summary

KEPT_FILES = ("spec.toml", "environment.json", "metrics.jsonl", "summary.json", "checkpoints/best.pt",
              "checkpoints/last.pt")


@pytest.fixture(scope="module")
def root(smoke_run: Path, long_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reports root with copies of the session's two finished runs: `short` (the smoke run) and `long`
    (quantum stage 3 epochs, batch 8; started after `short`)."""
    reports = tmp_path_factory.mktemp("runs") / "reports"
    for name, run in (("short", smoke_run), ("long", long_run)):
        copy_run(run, reports / "runs" / "smoke" / f"2026-{name}")
    return reports


def files(folder: Path) -> dict[str, str]:
    """Every regular file's hash (symbolic links, such as W&B's `latest-run`, are not files of the run)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def copy_root(root: Path, tmp: Path) -> Path:
    return copy_run(root, tmp / "reports")


def lock(run_dir: Path, pid: int) -> None:
    (run_dir / "run.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_list_shows_runs_newest_first_with_final_metrics(root: Path) -> None:
    rows = cli_json("runs", "list", "--root", str(root))
    assert isinstance(rows, list)
    assert [r["run_id"] for r in rows] == ["2026-long", "2026-short"]  # `long` started last
    for row in rows:
        final = summary(Path(row["path"]))["final"]
        assert row["status"] == "completed" and row["experiment"] == "smoke"
        assert row["seconds"] > 0 and row["started"].startswith("20")
        for head in ("ensemble", "global", "compressed", "quantum"):
            assert row["final"][head]["qwk"] == pytest.approx(final[f"val/{head}/qwk"])
    table = cli("runs", "list", "--root", str(root))
    assert table.returncode == 0
    assert "2026-long" in table.stdout and "completed" in table.stdout and "quantum" in table.stdout


def test_list_tells_running_from_interrupted(root: Path, tmp_path: Path) -> None:
    reports = copy_root(root, tmp_path)
    runs = reports / "runs" / "smoke"
    lock(runs / "2026-short", os.getpid())
    lock(runs / "2026-long", dead_pid())  # killed: its lock outlived the process
    status = {r["run_id"]: r["status"] for r in cli_json("runs", "list", "--root", str(reports))}
    assert status == {"2026-short": "running", "2026-long": "interrupted"}
    only = cli_json("runs", "list", "--root", str(reports), "--status", "running")
    assert [r["run_id"] for r in only] == ["2026-short"]


def test_list_shows_killed_runs_as_interrupted_with_their_last_metrics(killed_runs: dict[str, Path]) -> None:
    root = killed_runs["last.pt"].parents[2]
    rows = {r["run_id"]: r for r in cli_json("runs", "list", "--root", str(root))}
    assert set(rows) == {run.name for run in killed_runs.values()}
    for run in killed_runs.values():
        last = [r for r in metric_lines(run) if "val/ensemble/qwk" in r][-1]
        assert rows[run.name]["status"] == "interrupted" and rows[run.name]["seconds"] is None
        assert rows[run.name]["final"]["ensemble"]["qwk"] == pytest.approx(last["val/ensemble/qwk"])


@pytest.mark.parametrize("args, needle", [
    (["runs", "list", "--root", "/no/such/reports"], "--root /no/such/reports"),
    (["runs", "list", "--status", "done"], "--status"),
    (["runs", "compare", "2026-short"], "at least two"),
    (["runs", "compare", "2026-short", "nope"], "nope"),
    (["runs", "compare", "2026-", "2026-short"], "ambiguous"),
    (["runs", "prune", "--keep-epochs", "best,worst"], "--keep-epochs"),
    (["runs", "prune", "--older-than", "30 days"], "--older-than"),
    (["runs", "archive", "2026-short", "--to", "out.zip"], ".tar.gz"),
    (["report", "nope"], "nope"),
])
def test_bad_arguments_exit_2_with_one_clear_line(root: Path, args: list[str], needle: str) -> None:
    result = cli(*args, *(["--root", str(root)] if "--root" not in args else []))
    assert result.returncode == 2, result.stdout + result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_compare_puts_metrics_side_by_side_and_diffs_the_specs(root: Path) -> None:
    data = cli_json("runs", "compare", "2026-short", str(root / "runs" / "smoke" / "2026-long"), "--root", str(root))
    assert isinstance(data, dict)
    assert [r["run_id"] for r in data["runs"]] == ["2026-short", "2026-long"]
    finals = [summary(root / "runs" / "smoke" / f"2026-{n}")["final"] for n in ("short", "long")]
    for head, metrics in data["metrics"].items():
        for metric, values in metrics.items():
            assert values == [pytest.approx(f[f"val/{head}/{metric}"]) for f in finals]
    assert data["spec_differences"] == {"stages.1.epochs": [2, 3], "train.batch_size": [16, 8]}
    table = cli("runs", "compare", "2026-short", "2026-long", "--root", str(root))
    assert "stages.1.epochs" in table.stdout and "spec differences" in table.stdout


def test_prune_dry_run_touches_nothing(root: Path, tmp_path: Path) -> None:
    reports = copy_root(root, tmp_path)
    before = files(reports)
    result = cli("runs", "prune", "--root", str(reports), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would be freed" in result.stdout and "2026-long" in result.stdout
    assert files(reports) == before


def epochs(run_dir: Path, stage: str) -> list[str]:
    return sorted(p.name for p in (run_dir / "visualizations" / stage).iterdir())


def best_epoch(run_dir: Path, stage: str) -> int:
    values = [(r["epoch"], r["val/ensemble/qwk"]) for r in metric_lines(run_dir)
              if r["stage"] == stage and "val/ensemble/qwk" in r]
    return max(values, key=lambda ev: (ev[1], -ev[0]))[0]


def test_prune_keeps_best_last_and_bookkeeping(root: Path, tmp_path: Path) -> None:
    reports = copy_root(root, tmp_path)
    run_dir = reports / "runs" / "smoke" / "2026-long"
    kept = {f: h for f, h in files(run_dir).items() if f in KEPT_FILES}
    assert epochs(run_dir, "quantum") == ["epoch_01", "epoch_02", "epoch_03"]
    result = cli("runs", "prune", "--root", str(reports), "--keep-epochs", "best,last")
    assert result.returncode == 0, result.stderr
    assert "freed" in result.stdout
    wanted = {f"epoch_{best_epoch(run_dir, 'quantum'):02d}", "epoch_03"}
    assert epochs(run_dir, "quantum") == sorted(wanted)
    assert epochs(run_dir, "classical") == sorted({f"epoch_{best_epoch(run_dir, 'classical'):02d}", "epoch_02"})
    assert {f: h for f, h in files(run_dir).items() if f in KEPT_FILES} == kept
    assert (run_dir / "checkpoints" / "stage-quantum.pt").is_file()  # the last epoch of its stage
    cli("runs", "prune", "--root", str(reports), "--keep-epochs", "best")
    assert epochs(run_dir, "quantum") == [f"epoch_{best_epoch(run_dir, 'quantum'):02d}"]
    assert not list((run_dir / "checkpoints").glob("stage-*.pt"))
    assert {f: h for f, h in files(run_dir).items() if f in KEPT_FILES} == kept


def test_prune_never_touches_running_or_interrupted_runs(root: Path, tmp_path: Path) -> None:
    reports = copy_root(root, tmp_path)
    runs = reports / "runs" / "smoke"
    lock(runs / "2026-short", os.getpid())
    lock(runs / "2026-long", dead_pid())
    before = files(reports)
    result = cli("runs", "prune", "--root", str(reports), "--keep-epochs", "last")
    assert result.returncode == 0, result.stderr
    skips = [line for line in result.stdout.splitlines() if line.startswith("skip ")]
    assert len(skips) == 2 and "running" in result.stdout and "interrupted" in result.stdout
    assert "in 0 of 2 runs (2 skipped)" in result.stdout
    assert files(reports) == before


def test_prune_older_than_selects_by_start_time(root: Path, tmp_path: Path) -> None:
    reports = copy_root(root, tmp_path)
    before = files(reports)
    assert cli("runs", "prune", "--root", str(reports), "--older-than", "30d").returncode == 0
    assert files(reports) == before  # both runs started minutes ago
    assert cli("runs", "prune", "--root", str(reports), "--older-than", "0m").returncode == 0
    assert files(reports) != before


def test_archive_restores_the_run_byte_for_byte(root: Path, tmp_path: Path) -> None:
    run_dir = root / "runs" / "smoke" / "2026-long"
    target = tmp_path / "long.tar.gz"
    result = cli("runs", "archive", "2026-long", "--root", str(root), "--to", str(target))
    assert result.returncode == 0, result.stderr
    restored = tmp_path / "restored" / "runs"
    restored.mkdir(parents=True)
    with tarfile.open(target) as tar:
        tar.extractall(restored, filter="data")
    back = restored / "smoke" / "2026-long"
    manifest = json.loads((back / "archive.json").read_text())
    original = files(run_dir)
    assert {f: h for f, h in files(back).items() if f != "archive.json"} == original
    assert {f: m["sha256"] for f, m in manifest["files"].items()} == original
    assert manifest["status"] == "completed" and manifest["run_id"] == "2026-long"
    rows = cli_json("runs", "list", "--root", str(restored.parent))
    assert [r["run_id"] for r in rows] == ["2026-long"]
    again = cli("runs", "archive", "2026-long", "--root", str(root), "--to", str(target))
    assert again.returncode == 2 and "--force" in again.stderr
    assert cli("runs", "archive", "2026-long", "--root", str(root), "--to", str(target), "--force").returncode == 0


def test_archive_refuses_a_running_run(root: Path, tmp_path: Path) -> None:
    reports = copy_root(root, tmp_path)
    lock(reports / "runs" / "smoke" / "2026-short", os.getpid())
    result = cli("runs", "archive", "2026-short", "--root", str(reports), "--to", str(tmp_path / "a.tar.gz"))
    assert result.returncode == 2 and "still running" in result.stderr
    assert not (tmp_path / "a.tar.gz").exists()
