"""Sweeps: sweep files validated by key, every trial once, aggregation, kill -9 and resume, failures, PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qsight.sweeps.aggregate import interval
from tests.helpers import ROOT, cli, start_cli

TINY_SET = ["train.limit_batches=1", "stages.1.epochs=1", "explain.enabled=false", "sinks={}",
            "data.train_size=48", "data.val_size=24"]


def write_sweep(tmp: Path, name: str = "s", **keys: Any) -> Path:
    """A sweep of the smoke spec, tiny, its output under `tmp`."""
    sets = [*TINY_SET, f'output.root="{tmp / "reports"}"', *keys.pop("set", [])]
    lines = [f'name = "{name}"', f'base = "{ROOT / "experiments" / "smoke.toml"}"', f"set = {json.dumps(sets)}"]
    grid = keys.pop("grid", {})
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    lines += ["[grid]", *(f'"{k}" = {json.dumps(v)}' for k, v in grid.items())]
    path = tmp / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def load(tmp: Path, name: str = "s") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp / "reports" / "sweeps" / name / "summary.json").read_text())
    return data


def run_folders(tmp: Path) -> list[Path]:
    return sorted((tmp / "reports" / "runs" / "smoke").glob("*/spec.toml"))


# -- validation (no run) -----------------------------------------------------------------------------


def test_validate_reports_sweep_errors_by_key(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, grid={"stages.0.lr": [1e-3, -1.0], "model.heads.quantum.qubits": [3]},
                       sampler="grid", seeds=[1, 1])
    res = cli("validate", str(path))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "seeds repeat a value" in res.stderr
    path = write_sweep(tmp_path, grid={"stages.0.lr": [1e-3, -1.0]}, seeds=[1])
    res = cli("validate", str(path))
    assert res.returncode == 2
    assert "grid.stages.0.lr=-1.0" in res.stderr and "stages.0.lr" in res.stderr
    assert "Traceback" not in res.stderr


def test_validate_search_needs_trials_and_a_valid_range(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(f'name = "t"\nbase = "{ROOT / "experiments" / "smoke.toml"}"\nsampler = "tpe"\n'
                    '[search]\n"stages.0.lr" = { float = [1e-4, 20.0], log = true }\n')
    res = cli("validate", str(path))
    assert res.returncode == 2 and "needs trials = N" in res.stderr
    path.write_text(path.read_text().replace('sampler = "tpe"', 'sampler = "tpe"\ntrials = 4'))
    res = cli("validate", str(path))
    assert res.returncode == 2 and "search.stages.0.lr=20.0" in res.stderr, res.stderr
    path.write_text(path.read_text().replace("20.0", "1e-2"))
    res = cli("validate", str(path))
    assert res.returncode == 0 and "4 trials" in res.stdout, res.stderr


def test_interval_is_the_t_interval_of_the_mean() -> None:
    stat = interval([1.0, 2.0, 3.0])
    assert stat["mean"] == 2.0 and stat["std"] == 1.0
    assert stat["ci"] == pytest.approx([2.0 - 2.4841, 2.0 + 2.4841], abs=1e-3)  # t(0.975, 2) = 4.303
    assert interval([0.5])["ci"] is None


# -- runs ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2 x 2 grid over two seeds, run by two worker processes; its folder (shared by the module)."""
    tmp = tmp_path_factory.mktemp("grid")
    path = write_sweep(tmp, grid={"model.heads.quantum.qubits": [2, 3], "stages.0.lr": [1e-3, 3e-3]},
                       seeds=[1, 2])
    res = cli("sweep", str(path), "--workers", "2", timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_grid_with_seeds_runs_every_trial_once_and_aggregates(grid_sweep: Path) -> None:
    tmp_path = grid_sweep
    summary = load(tmp_path)
    keys = [(json.dumps(t["params"], sort_keys=True), t["seed"]) for t in summary["trials"]]
    assert len(keys) == 8 and len(set(keys)) == 8
    assert {t["state"] for t in summary["trials"]} == {"COMPLETE"}
    assert len(run_folders(tmp_path)) == 8
    assert len(summary["groups"]) == 4
    for group in summary["groups"]:
        assert group["n"] == 2 and sorted(group["seeds"]) == [1, 2]
        qwk = group["metrics"]["val/quantum/qwk"]
        assert qwk["ci"][0] <= qwk["mean"] <= qwk["ci"][1]
        assert sorted(v["seed"] for v in qwk["values"]) == [1, 2]
        assert qwk["mean"] == pytest.approx(sum(v["value"] for v in qwk["values"]) / 2)
        test_qwk = group["metrics"]["test/quantum/qwk"]  # the runs' held-out test split, over the seeds
        assert sorted(v["seed"] for v in test_qwk["values"]) == [1, 2]
        paired = group["test_paired"]["quantum-vs-ensemble"]
        assert paired["n"] == 2 and paired["ci"][0] <= paired["mean"] <= paired["ci"][1]
    run = json.loads(Path(summary["trials"][0]["run_dir"], "summary.json").read_text())
    assert run["tags"]["sweep"] == "s" and run["tags"]["trial"] == str(summary["trials"][0]["number"])
    status = cli("sweep", "status", "s", "--root", str(tmp_path / "reports"))
    assert status.returncode == 0 and "8/8 done" in status.stdout, status.stderr


# -- the sweep's HTML page ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_page(grid_sweep: Path) -> Path:
    res = cli("sweep", "report", "s", "--root", str(grid_sweep / "reports"))
    assert res.returncode == 0, res.stderr[-3000:]
    page = grid_sweep / "reports" / "sweeps" / "s" / "report.html"
    assert f"sweep report: {page}" in res.stdout
    return page


def _half(stat: dict[str, Any]) -> str:
    return f"{stat['mean']:.4f} ± {(stat['ci'][1] - stat['ci'][0]) / 2:.4f}"


@pytest.mark.slow
def test_report_shows_every_configuration_head_and_seed(grid_sweep: Path, report_page: Path) -> None:
    from tests.test_report import tables

    html, summary = report_page.read_text(encoding="utf-8"), load(grid_sweep)
    found = tables(html)
    configs = next(t for t in found if t[0][:3] == ["configuration", "n", "seeds"])
    assert configs[0][3:] == ["compressed", "global", "quantum", "ensemble"]
    labels = {"quantum.qubits=2, 0.lr=0.001", "quantum.qubits=2, 0.lr=0.003", "quantum.qubits=3, 0.lr=0.001",
              "quantum.qubits=3, 0.lr=0.003"}
    assert {row[0] for row in configs[1:]} == labels
    for group, row in zip(summary["groups"], configs[1:], strict=True):
        assert row[1:3] == ["2", ", ".join(str(s) for s in group["seeds"])]
        assert row[3:] == [_half(group["metrics"][f"val/{h}/qwk"]) for h in configs[0][3:]]
    spreads = [t for t in found if t[0][1:3] == ["seed 1", "seed 2"]]
    assert len(spreads) == 4  # one per head
    quantum = {row[0]: row[1:3] for row in spreads[2][1:]}
    for group in summary["groups"]:
        by_seed = {v["seed"]: f"{v['value']:.4f}" for v in group["metrics"]["val/quantum/qwk"]["values"]}
        label = ", ".join(f"{'.'.join(k.split('.')[-2:])}={v}" for k, v in group["params"].items())
        assert quantum[label] == [by_seed[1], by_seed[2]]
    trials = next(t for t in found if t[0][:2] == ["trial", "state"])
    assert len(trials) == 9 and {row[1] for row in trials[1:]} == {"COMPLETE"}
    # one chart per parameter (4 groups x 4 heads x (2 seeds + mean) points), one strip chart per head
    assert html.count("<svg") == 2 + 4 and html.count("<circle") == 2 * 48 + 4 * 12
    assert "http://" not in html and "https://" not in html and "<script" not in html


@pytest.mark.slow
def test_report_escapes_text_and_renders_an_empty_sweep(grid_sweep: Path, tmp_path: Path) -> None:
    from qsight.sweeps.report import render_report

    summary = load(grid_sweep)
    summary["name"] = "<script>alert(1)</script>"
    summary["trials"][0]["message"] = "a & b <img src=x>"
    html = render_report(summary)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a &amp; b &lt;img src=x&gt;" in html
    empty = render_report({**summary, "groups": [], "trials": [], "best": None})
    assert "No completed trials yet." in empty and "No trials in the study." in empty and "<svg" not in empty
    res = cli("sweep", "report", str(grid_sweep / "s.toml"), "--out", str(tmp_path / "x" / "page.html"))
    assert res.returncode == 0 and (tmp_path / "x" / "page.html").is_file(), res.stderr[-2000:]
    res = cli("sweep", "report", "nope", "--root", str(tmp_path))
    assert res.returncode == 2 and "nope: neither a sweep file nor a sweep" in res.stderr


@pytest.fixture
def chromium_binary() -> str:
    """Headless Chromium, or a skip saying why (asked before the sweep runs)."""
    from tests.test_report import chromium

    return chromium()


def open_in_chromium(binary: str, page: Path, profile: Path) -> tuple[list[Any], list[str]]:
    """Open `page` in headless Chromium: [title, [[width, height, circles] per svg]] and the problems seen."""
    from tests.test_report import DevTools, problems

    browser = DevTools(binary, profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        script = ("[document.title, Array.from(document.querySelectorAll('svg'), s => {"
                  " const r = s.getBoundingClientRect();"
                  " return [r.width, r.height, s.querySelectorAll('circle').length]; })]")
        result = browser.send("Runtime.evaluate", {"expression": script, "returnByValue": True}, session=session)
    finally:
        browser.close()
    return result["result"]["value"], problems(browser.events)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_report_loads_cleanly_in_headless_chromium(chromium_binary: str, report_page: Path, tmp_path: Path) -> None:
    moved = tmp_path / "mailed" / "report.html"  # alone in a folder: nothing may point back at the sweep
    moved.parent.mkdir()
    shutil.copy(report_page, moved)
    (title, charts), found = open_in_chromium(chromium_binary, moved, tmp_path / "profile")
    assert title == "sweep s"
    assert len(charts) == 6 and all(width > 100 and height > 50 for width, height, _ in charts), charts
    assert [c for _, _, c in charts] == [48, 48, 12, 12, 12, 12]
    assert found == []


@pytest.mark.slow
def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("the failing trial asks for CUDA, present here")
    path = write_sweep(tmp_path, grid={"train.device": ["cuda", "cpu"]}, seeds=[1])
    res = cli("sweep", str(path), timeout=900)
    assert res.returncode == 1, res.stderr[-3000:]
    trials = {t["params"]["train.device"]: t for t in load(tmp_path)["trials"]}
    assert trials["cuda"]["state"] == "FAIL" and "no CUDA device" in trials["cuda"]["message"]
    assert trials["cpu"]["state"] == "COMPLETE"
    assert "1 failed" in res.stderr


def _study(tmp: Path, name: str = "s") -> Any:
    import optuna

    from qsight.sweeps.study import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(str(tmp / "reports" / "sweeps" / name /
                                                                       "journal.log")))


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, grid={"model.heads.quantum.qubits": [2, 3, 4]}, seeds=[1])
    cmd = [sys.executable, "-m", "qsight", "sweep", str(path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    finished: list[int] = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1.0)
            if (tmp_path / "reports" / "sweeps" / "s" / "journal.log").is_file():
                states = [t.state.name for t in _study(tmp_path).get_trials()]
                started = len(run_folders(tmp_path)) > states.count("COMPLETE")
                if "COMPLETE" in states and "RUNNING" in states and started:
                    break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = {t.number: t.user_attrs["runs"][0]["run_dir"] for t in _study(tmp_path).get_trials()
              if t.state.name == "COMPLETE"}
    finished = sorted(before)
    assert finished and len(finished) < 3
    res = cli("sweep", str(path), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = load(tmp_path)
    done = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    assert sorted(t["params"]["model.heads.quantum.qubits"] for t in done) == [2, 3, 4]
    assert {t["number"]: t["run_dir"] for t in done if t["number"] in before} == before
    assert [t["state"] for t in summary["trials"]].count("RETRIED") == 1
    assert len(run_folders(tmp_path)) == 4  # three completed runs and the one cut short


# -- scale-out on a real PostgreSQL server -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (run as an unprivileged user when we are root)."""
    pytest.importorskip("psycopg2", reason="psycopg2 missing (pip install qsight[sweeps-postgres])")
    initdb = shutil.which("initdb") or "/usr/lib/postgresql/15/bin/initdb"
    pg_ctl = shutil.which("pg_ctl") or "/usr/lib/postgresql/15/bin/pg_ctl"
    if not (Path(initdb).is_file() and Path(pg_ctl).is_file()):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    prefix: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="qsight-pg-"))
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None or shutil.which("runuser") is None:
            pytest.skip("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
        shutil.chown(folder, user)
        prefix = ["runuser", "-u", user, "--"]
    data, port = folder / "data", _free_port()
    try:
        init = subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "qsight", "--no-sync"],
                              capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
        opts = f"-p {port} -h 127.0.0.1 -k {folder} -c fsync=off"
        start = subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(folder / "log"), "-w",
                                "-t", "120", "start"], capture_output=True, text=True, timeout=180)
        if start.returncode != 0:
            pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
        yield f"postgresql://qsight@127.0.0.1:{port}/postgres"
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.slow
def test_two_workers_on_postgres_run_every_trial_exactly_once(tmp_path: Path, postgres_url: str) -> None:
    path = write_sweep(tmp_path, grid={"model.heads.quantum.qubits": [2, 3], "stages.0.lr": [1e-3, 3e-3]},
                       seeds=[1])
    procs = [start_cli("sweep", str(path), "--storage", postgres_url) for _ in range(2)]
    outputs = [p.communicate(timeout=1200) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    summary = load(tmp_path)
    keys = [json.dumps(t["params"], sort_keys=True) for t in summary["trials"]]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert {t["state"] for t in summary["trials"]} == {"COMPLETE"}
    assert len(run_folders(tmp_path)) == 4
    assert summary["storage"] == postgres_url
