"""``qsight report``: the self-contained HTML page of a run, checked as text and in a headless Chromium."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from qsight.runs import RunFolder
from qsight.runs.curves import timeline
from qsight.runs.report import KEY_METRICS, write_report
from tests.helpers import HEADS, copy_run, summary

PNG_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]*)")
ALL_HEADS = (*HEADS, "ensemble")


@pytest.fixture(scope="module")
def run_dir(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's smoke run, for the module (its report.html is written into it)."""
    return copy_run(smoke_run, tmp_path_factory.mktemp("report") / "run")


@pytest.fixture(scope="module")
def page(run_dir: Path) -> str:
    path = write_report(RunFolder(run_dir))
    assert path == run_dir / "report.html"
    return path.read_text(encoding="utf-8")


def copy_without_report(run_dir: Path, dest: Path) -> Path:
    return copy_run(run_dir, dest, leave_out=("checkpoints", "report.html"))


class Tables(HTMLParser):
    """Every table of a page as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def tables(html: str) -> list[list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m, validate=True) for m in PNG_URI.findall(html)]


def test_metrics_table_matches_summary(run_dir: Path, page: str) -> None:
    final = summary(run_dir)["final"]
    table = next(t for t in tables(page) if t[0][0] == "head")
    columns = table[0][1:]
    assert columns == [m for m in KEY_METRICS if f"val/ensemble/{m}" in final]
    assert {"qwk", "accuracy", "referable_auc", "ece"} <= set(columns)
    rows = {row[0]: row[1:] for row in table[1:]}
    assert set(rows) == set(ALL_HEADS)
    for head, cells in rows.items():
        assert cells == [f"{final[f'val/{head}/{m}']:.4f}" for m in columns], head


def test_header_best_epochs_spec_and_environment(run_dir: Path, page: str) -> None:
    run = RunFolder(run_dir)
    for text in ("smoke", run.run_id, "completed", "no DR, mild, moderate, severe, proliferative"):
        assert escape(text) in page
    best = next(t for t in tables(page) if t[0][:3] == ["stage", "epochs", "best epoch"])
    assert [row[:2] for row in best[1:]] == [["classical", "2"], ["quantum", "2"], ["ensemble", "1"]]
    spec_text = (run_dir / "spec.toml").read_text(encoding="utf-8")
    assert f"<pre>{escape(spec_text)}</pre>" in page
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["git"]["commit"] in page and env["packages"]["torch"] in page


def test_circuit_cost_table_shows_summary_quantum(run_dir: Path, page: str) -> None:
    cost = summary(run_dir)["quantum"]["quantum"]
    table = next(t for t in tables(page) if t[0] == ["", "quantum"])
    rows = {row[0]: row[1] for row in table[1:]}
    assert rows["qubits"] == str(cost["qubits"]) and rows["backend"] == cost["backend"]
    assert rows["transpiled two-qubit gates"] == str(cost["transpiled_two_qubit_gates"])
    assert rows["estimated fidelity"] == f"{cost['estimated_fidelity']:.4f}" and rows["shots"] == "exact"
    assert "no device chosen" in page


def test_gradcam_section_shows_the_pointing_game_beside_its_controls(run_dir: Path, page: str) -> None:
    final = summary(run_dir)["final"]
    table = next(t for t in tables(page) if t[0][:3] == ["head", "pointing game", "shuffled control"])
    rows = {row[0]: row[1:] for row in table[1:]}
    scored = [h for h in ALL_HEADS if f"val/{h}/pointing_game" in final]
    assert scored and list(rows) == scored
    for head in scored:
        m = {k: final[f"val/{head}/{k}"] for k in ("pointing_game", "pointing_game_shuffled", "pointing_game_chance")}
        assert rows[head][:3] == [f"{v:.4f}" for v in m.values()], head
        assert rows[head][3] == str(int(final[f"val/{head}/pointing_game_n"]))
    assert page.index("shuffled control") < page.index('alt="Grad-CAM collage"')


def test_images_are_embedded_valid_pngs(page: str) -> None:
    images = pngs(page)
    # learning curves, a confusion matrix per head, the Grad-CAM collage, a test confusion matrix per head
    assert len(images) == 1 + len(ALL_HEADS) + 1 + len(ALL_HEADS)
    for data in images:
        assert len(data) > 5_000
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG" and min(img.size) > 100
            img.verify()
    assert "src=\"file:" not in page and "http://" not in page and "https://" not in page


def test_text_from_files_is_escaped(run_dir: Path, tmp_path: Path) -> None:
    run = copy_without_report(run_dir, tmp_path / "run")
    spec = run / "spec.toml"
    spec.write_text(spec.read_text().replace("seconds-long", "<script>alert(1)</script> & co"))
    html = write_report(RunFolder(run)).read_text(encoding="utf-8")
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html


def test_partial_run_still_renders(run_dir: Path, tmp_path: Path) -> None:
    run = copy_without_report(run_dir, tmp_path / "run")
    (run / "summary.json").unlink()
    shutil.rmtree(run / "visualizations")
    out = write_report(RunFolder(run), tmp_path / "elsewhere" / "page.html")
    html = out.read_text(encoding="utf-8")
    assert out == tmp_path / "elsewhere" / "page.html"
    assert "interrupted" in html and "summary.json, visualizations" in html
    assert "No confusion matrices" in html and "No Grad-CAM collage" in html
    assert "the last logged epoch (no summary.json)" in html
    assert len(pngs(html)) == 1  # the learning curves, from metrics.jsonl


def test_killed_run_renders_what_it_logged(interrupted_run: Path, tmp_path: Path) -> None:
    """A run killed in its first stage: marked interrupted, with the epoch it logged and its pictures."""
    html = write_report(RunFolder(interrupted_run), tmp_path / "page.html").read_text(encoding="utf-8")
    assert "interrupted" in html and "Missing from the run folder: summary.json." in html
    assert "the last logged epoch (no summary.json)" in html
    best = next(t for t in tables(html) if t[0][:3] == ["stage", "epochs", "best epoch"])
    assert [row[:3] for row in best[1:]] == [["classical", "1", "1"], ["quantum", "0", "–"], ["ensemble", "0", "–"]]
    table = next(t for t in tables(html) if t[0][0] == "head")
    assert [row[0] for row in table[1:]] == ["global", "compressed", "ensemble"]  # the quantum head never ran
    assert len(pngs(html)) == 1 + 3 + 1  # learning curves, the epoch's confusion matrices, its Grad-CAM collage
    assert not (interrupted_run / "report.html").exists()


def test_run_with_only_a_spec_renders(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(run_dir / "spec.toml", run / "spec.toml")
    html = write_report(RunFolder(run)).read_text(encoding="utf-8")
    for note in ("No validation metrics were logged", "no learning curves", "No confusion matrices",
                 "No Grad-CAM collage", "No environment.json", "unknown (no summary.json)"):
        assert note in html
    assert not pngs(html)


def test_timeline_keeps_the_latest_row_of_a_resumed_epoch() -> None:
    rows = [{"stage": "a", "epoch": 1, "val/x/qwk": 0.1}, {"stage": "a", "epoch": 2, "val/x/qwk": 0.2},
            {"stage": "a", "epoch": 2, "val/x/qwk": 0.3}, {"stage": "b", "epoch": 1, "val/y/qwk": 0.4,
                                                          "train/total/loss": 1.0, "train/y/loss": 0.5}]
    line = timeline(rows)
    assert line.labels == ("a 1", "a 2", "b 1") and line.stages == (("a", 0), ("b", 2))
    assert line.series("val/x/qwk") == ([0, 1], [0.1, 0.3])
    assert line.heads("val/{head}/qwk") == ["x", "y"] and line.heads("train/{head}/loss") == ["y"]


# ---- a real browser ------------------------------------------------------------------------------------------------


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4, NUL-separated JSON)."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_chrome, self._to = os.pipe()
        self._from, from_chrome = os.pipe()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome, from_chrome)]
        for fd in (to_chrome, from_chrome):
            os.close(fd)

        def child_fds() -> None:  # dup2 leaves 3 and 4 inheritable; every other parent fd is close-on-exec
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=child_fds)
        for fd in high:
            os.close(fd)
        self._buffer, self._id = b"", 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._next(time.monotonic() + 30)
            if reply.get("id") == self._id:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})

    def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not any(e["method"] == method for e in self.events):
            self._next(deadline)
        return next(e for e in self.events if e["method"] == method)

    def _next(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._from, 1 << 16) if ready else b""
            assert chunk, "Chromium went silent (timed out or exited)"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    def close(self) -> None:
        try:
            os.write(self._to, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._to)
            os.close(self._from)


def problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions, failed loads and any load that is neither file: nor data:."""
    found = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails']}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.loadingFailed":
            found.append(f"load failed: {params.get('errorText')}")
        elif method == "Network.requestWillBeSent" and not params["request"]["url"].startswith(("file:", "data:")):
            found.append(f"network request: {params['request']['url']}")
    return found


def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install -y chromium)")
    return binary


def load(page: Path, profile: Path) -> tuple[str, list[list[Any]], list[str]]:
    """Open `page` in headless Chromium: its title, [complete, naturalWidth, naturalHeight, alt] per image,
    and the problems seen."""
    browser = DevTools(chromium(), profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        script = ("[document.title,"
                  " Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])]")
        result = browser.send("Runtime.evaluate", {"expression": script, "returnByValue": True}, session=session)
    finally:
        browser.close()
    title, images = result["result"]["value"]
    return title, images, problems(browser.events)


@pytest.mark.timeout(120)
def test_page_loads_cleanly_in_headless_chromium(page: str, run_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "mailed" / "report.html"  # alone in a folder: nothing may point back at the run folder
    moved.parent.mkdir()
    shutil.copy(run_dir / "report.html", moved)
    title, images, found = load(moved, tmp_path / "profile")
    assert title.startswith("smoke")
    assert len(images) == len(pngs(page)) == 2 + 2 * len(ALL_HEADS)  # as in test_images_are_embedded_valid_pngs
    assert all(done and width > 0 and height > 0 for done, width, height, _ in images), images
    assert found == []


@pytest.mark.timeout(120)
def test_the_browser_check_sees_broken_pages(tmp_path: Path) -> None:
    """The check above can fail: a broken image, a console error and a network load are all reported."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><title>bad</title><img src="data:image/png;base64,AAAA" alt="broken">'
                   '<img src="http://127.0.0.1:9/x.png" alt="remote"><script>console.error("boom")</script>')
    _, images, found = load(bad, tmp_path / "profile")
    assert [width for _, width, _, _ in images] == [0, 0]
    assert any("boom" in f for f in found) and any("127.0.0.1:9" in f for f in found)
