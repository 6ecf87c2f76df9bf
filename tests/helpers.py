"""What many tests need: the smoke spec and its variants, the CLI in a subprocess, run-folder readers,
plugin distributions written on disk, and snapshots of a run as a kill would leave it."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from tests.launcher import Launched, shim_env

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"
HEADS = ("global", "compressed", "quantum")
KILL_POINTS = ("last.pt", "stage-classical.pt", "stage-quantum.pt")  # checkpoint files, in the order written

# ---- specs ---------------------------------------------------------------------------------------------------------


def smoke_raw() -> dict[str, Any]:
    """experiments/smoke.toml as parsed TOML (a fresh copy each call)."""
    with SMOKE.open("rb") as fh:
        return tomllib.load(fh)


def tiny_spec(tmp: Path, *, reports: Path | None = None, sinks: bool = False, name: str = "tiny",
              **changes: Any) -> Path:
    """The smoke spec without remote sinks (unless asked), written to `tmp`.

    Its output root is `reports` (share one across runs to share the synthetic-data cache) or `tmp/reports`.
    `changes` set dotted paths spelled with `__` (``stages__1__epochs=3``).
    """
    raw = copy.deepcopy(smoke_raw())
    raw["name"] = name
    raw["output"] = {"root": str(reports or tmp / "reports")}
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


# ---- the command line ----------------------------------------------------------------------------------------------


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: ours, W&B offline, one torch thread, plus `env`.

    One thread, as torchrun gives each of its workers: runs compared with a two-process run are made
    like it (the thread count changes float rounding, and a rank metric on 40 samples can flip), and
    two test workers on two cores do not oversubscribe them.

    Without ``WANDB_SERVICE``: a W&B run in this process exports its wandb-core service there, and a
    child attached to it would share it with every other child (a killed child's run stays open in
    it, and its resume is refused: "run ID ... is in use"), unlike a run started from a shell.
    """
    found = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **(env or {})}
    found.pop("WANDB_SERVICE", None)
    return found


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: int = 600,
        fresh: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m qsight ARGS`` as a user runs it: exit code, stdout, stderr. Forked warm (`tests.launcher`),
    or `fresh` in a new interpreter."""
    return start_cli(*args, cwd=cwd, env=env, fresh=fresh).completed(timeout)


def start_cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, new_session: bool = False,
              merge_output: bool = False, fresh: bool = False) -> Launched:
    """``python -m qsight ARGS`` started and left running (`cli_env(env)` as its environment)."""
    return Launched(["-m", "qsight", *args], cwd, cli_env(env), new_session, merge_output, fresh=fresh)


def torchrun(*args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node 2 -m qsight ARGS``: the agent and its two workers forked
    warm like `cli` (the workers through `tests/warm_python.py`)."""
    argv = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            str(ROOT / "tests" / "warm_python.py"), "-m", "qsight", *args]
    return Launched(argv, ROOT, cli_env({**(env or {}), **shim_env()}), False, False).completed(timeout)


def cli_json(*args: str) -> Any:
    """The parsed output of ``qsight ARGS --format json`` (which must succeed)."""
    result = cli(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def heavy_imports(module: str, heavy: Iterable[str]) -> list[str]:
    """Which of `heavy` a fresh interpreter has imported after ``import module``."""
    code = f"import sys, {module}; print(','.join(sorted(m for m in {sorted(heavy)!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


# ---- run folders ---------------------------------------------------------------------------------------------------


def summary(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return data


def val_metrics(run_dir: Path) -> dict[str, float]:
    return {k: v for k, v in summary(run_dir)["final"].items() if k.startswith("val/")}


def metric_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def copy_run(run_dir: Path, dest: Path, *, leave_out: Sequence[str] = ()) -> Path:
    """A copy of a run folder (for tests that change it), without the names in `leave_out`."""
    return Path(shutil.copytree(run_dir, dest, symlinks=True, ignore=shutil.ignore_patterns(*leave_out)))


def run_with_snapshots(args: Sequence[str], run_dir: Path, points: dict[str, Path],
                       env: dict[str, str] | None = None, timeout: float = 600) -> None:
    """Run ``qsight run ARGS --run-dir RUN_DIR`` to the end; on the way, as soon as each checkpoint file
    named in `points` exists, copy the run folder to the path given for it.

    The run's process group is stopped (SIGSTOP) while it is copied, so each copy holds exactly what a
    SIGKILL at that moment would leave on disk; its run.lock names a process that has exited by the time
    this returns.
    """
    proc = start_cli("run", *args, "--run-dir", str(run_dir), env=env, new_session=True, merge_output=True)
    deadline = time.monotonic() + timeout
    pending = list(points.items())
    try:
        while pending and proc.poll() is None and time.monotonic() < deadline:
            name, dest = pending[0]
            if (run_dir / "checkpoints" / name).is_file():
                os.killpg(proc.pid, signal.SIGSTOP)
                try:
                    shutil.copytree(run_dir, dest, symlinks=True)
                finally:
                    os.killpg(proc.pid, signal.SIGCONT)
                pending.pop(0)
            else:
                time.sleep(0.05)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = proc.output()[0][-3000:]
    assert not pending, f"the run ended before {pending[0][0]} existed:\n{output}"
    assert proc.returncode == 0, output


# ---- plugins -------------------------------------------------------------------------------------------------------


def write_plugin(root: Path, *, dist: str, module: str, body: str, group: str = "qsight.components") -> dict[str, str]:
    """A real plugin distribution under `root`: package `module` (its ``__init__`` is `body`) and a dist-info
    whose entry point in `group` is ``module:register``. Returns the env that puts `root` on the path."""
    pkg = root / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{module} = {module}:register\n")
    return {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


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
    """The `nan-after` head as a plugin distribution; returns the env that puts it on the path."""
    return write_plugin(root, dist="qsight-nan-plugin", module="qsight_nan_plugin", body=NAN_PLUGIN)


# ---- sink inputs ---------------------------------------------------------------------------------------------------


def sink_artifacts(run_dir: Path) -> dict[str, Path]:
    """What a trainer hands the sinks: a confusion PNG and a confidence CSV of epoch 1, and a checkpoint."""
    from PIL import Image

    folder = run_dir / "visualizations" / "classical" / "epoch_01"
    folder.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    files = {"png": folder / "confusion_ensemble.png", "csv": folder / "confidence.csv",
             "ckpt": run_dir / "checkpoints" / "stage-classical.pt"}  # not a model: no last.pt
    Image.new("RGB", (16, 12), (10, 200, 10)).save(files["png"])
    files["csv"].write_text("id,label,pred,confidence\na,0,0,0.9\nb,3,1,0.4\n")
    files["ckpt"].write_bytes(b"\1" * 128)
    return files


# ---- WandB offline files ----------------------------------------------------------------------------------------

BLOCK, HEADER = 32768, 7


def read_records(path: Path) -> list[Any]:
    """The protobuf records of an offline .wandb file (leveldb-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, out = HEADER, b"", []
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full, first
            buf = payload
        elif kind in (3, 4):  # middle, last
            buf += payload
        if kind in (1, 4):
            out.append(pb.Record.FromString(buf))  # type: ignore[attr-defined]
    return out


def read_finished(path: Path, wait: float = 10.0) -> list[Any]:
    """The records once the exit record is on disk (wandb-core writes asynchronously)."""
    deadline = time.monotonic() + wait
    while True:
        records = read_records(path)
        if any(r.HasField("exit") for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def history(records: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for rec in records:
        if rec.HasField("history"):
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item})
    return rows


def qiskit_probabilities(hc: Any, x: Any, w: Any) -> Any:
    """Qiskit ``Statevector`` probabilities (B, 2^n) of a `HeadCircuit` at inputs ``x`` (B, I), weights ``w``."""
    import numpy as np
    from qiskit.quantum_info import Statevector

    rows = []
    for xi in x:
        values = dict(zip(hc.inputs, xi, strict=True)) | dict(zip(hc.weights, w, strict=True))
        rows.append(Statevector(hc.circuit.assign_parameters(values)).probabilities())
    return np.stack(rows)


def mixed_circuit(width: int = 2) -> Any:
    """A `HeadCircuit` on qubits 0 and 1 of ``width``: angles mixing inputs and weights, per-sample
    rotation layers (rx of inputs) and a controlled rotation."""
    from qiskit.circuit import Parameter, QuantumCircuit

    from qsight.quantum.circuits import HeadCircuit

    x, t = [Parameter(f"x{i}") for i in range(2)], [Parameter(f"t{i}") for i in range(3)]
    qc = QuantumCircuit(width)
    qc.h(0)
    qc.ry(x[0] * t[0], 1)
    qc.rz(x[1] + t[1], 0)
    qc.cx(0, 1)
    qc.rx(x[0] * x[1] - 0.3, 0)
    qc.crz(t[2], 1, 0)
    qc.ry(t[1] * t[2], 1)
    return HeadCircuit(qc, tuple(x), tuple(t))


def in_threads(work: Callable[[int], None], count: int) -> list[BaseException]:
    """Run ``work(0) … work(count - 1)`` in as many threads at once; the exceptions they raised."""
    import threading

    errors: list[BaseException] = []

    def guarded(t: int) -> None:
        try:
            work(t)
        except BaseException as exc:  # pragma: no cover - the failure a caller tests for
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in range(count)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors
