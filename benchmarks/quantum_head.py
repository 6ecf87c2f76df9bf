"""Quantum head forward+backward time, exactness and peak memory per sampler, side by side.

    python benchmarks/quantum_head.py            # n = 4, 8, 12, 16; about 11 minutes on 2 busy cores
    python benchmarks/quantum_head.py --quick    # reference samplers at n = 4 only; 1 to 2 minutes
    python benchmarks/quantum_head.py --json     # one JSON object for scripts
    python benchmarks/quantum_head.py --threads 2

Every row runs in a fresh process (`--row SAMPLER:N`), so its peak memory is its own: the process's
peak RSS (``ru_maxrss``) and that peak less the RSS before the head was built. Timings are medians;
`x_torch_exact` is each time over torch-exact's (float64) at the same n; `max_abs_err` is the
largest |p - p_qiskit| against ``qiskit.quantum_info.Statevector`` over two random (angles, weights).

Circuit: ZZ feature map (reps 2, full) + RealAmplitudes (reps 2, reverse_linear), probabilities
readout; batch 32, 16 input features, 5 classes. One step = logits → cross entropy → backward.
Samplers: qsight's torch-exact (float64, float32), aer (SamplerV2, 1024 shots, parameter shift) and
statevector (SamplerQNN); PennyLane default.qubit (backprop) and lightning.qubit (adjoint) when
importable; Aer's exact statevector (aer-sv, parameter shift), timed on 8 (n = 12) and 1 (n = 16)
samples of the batch and scaled to 32 (its cost is linear in the batch; a full step takes minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from qsight.quantum import QuantumHeadParams, quantum_head
from qsight.quantum.head import QuantumHead

BATCH, IN_DIM, CLASSES = 32, 16, 5


@dataclass(frozen=True)
class Row:
    """A sampler at n qubits, and how to time it: up to `reps` steps within `budget` seconds after
    `warmup` steps, on `batch` samples (times scaled to BATCH when smaller)."""

    sampler: str
    n: int
    budget: float
    reps: int
    warmup: int
    batch: int = BATCH


def plan(quick: bool) -> list[Row]:
    rows: list[Row] = []
    for n in (4, 8, 12) if quick else (4, 8, 12, 16):
        big = n == 16
        rows.append(Row("torch-exact", n, 5.0 if big else 2.0, 5 if big else 200, 1 if big else 5))
        if not big:
            rows.append(Row("torch-exact-f32", n, 2.0, 200, 5))
        if n <= 8 and (not quick or n == 4):
            rows += [Row("pennylane", n, 3.0, 20, 2), Row("aer", n, 1.0, 3, 0),
                     Row("statevector", n, 1.0, 2 if n == 4 else 1, 0)]
        if n >= 12 and not quick:
            rows += [Row("lightning", n, 10.0, 1 if big else 3, 1),
                     Row("aer-sv", n, 0.0, 1, 0, 1 if big else 8)]  # a full step: 2 and 30 minutes
    return rows


def time_step(step: Callable[[], None], budget_s: float, max_reps: int, warmup: int) -> tuple[float, int]:
    """(median milliseconds, steps timed) of `step` over up to `max_reps` runs within about `budget_s`."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), len(times)


def head_step(head: nn.Module, batch: int = BATCH) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, IN_DIM, generator=g), torch.randint(0, CLASSES, (batch,), generator=g)

    def step() -> None:
        head.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(head(x), y).backward()  # type: ignore[no-untyped-call]

    return step


def qsight_head(sampler: dict[str, Any], n: int) -> nn.Module:
    torch.manual_seed(0)
    return quantum_head(QuantumHeadParams.model_validate({"qubits": n, "sampler": sampler}), IN_DIM, CLASSES)


def make_head(sampler: str, n: int, threads: int) -> QuantumHead:
    """The head of a row; reference samplers (`quantum_refs`) start from the same weights as torch-exact."""
    qsight = {"torch-exact": {"type": "torch-exact", "dtype": "float64"},
              "torch-exact-f32": {"type": "torch-exact", "dtype": "float32"},
              "aer": {"type": "aer"}, "statevector": {"type": "statevector"}}
    if sampler in qsight:
        head = qsight_head(qsight[sampler], n)
        assert isinstance(head, QuantumHead)
        return head
    import quantum_refs as refs

    make = {"pennylane": refs.DefaultQubitSampler, "lightning": refs.LightningSampler,
            "aer-sv": lambda: refs.AerStatevectorSampler(threads)}
    torch.manual_seed(0)
    return QuantumHead(QuantumHeadParams.model_validate({"qubits": n}), IN_DIM, CLASSES, make[sampler]())


def max_abs_err(head: QuantumHead, n: int, samples: int = 2) -> float:
    """Largest |p - p_qiskit| of the head's circuit over random angles and weights."""
    from qiskit.quantum_info import Statevector

    from qsight.quantum.circuits import CircuitSpec, build_circuit

    hc = build_circuit(CircuitSpec(n))
    rng = np.random.default_rng(0)
    x, w = rng.uniform(-np.pi, np.pi, (samples, n)), rng.uniform(-np.pi, np.pi, len(hc.weights))
    with torch.no_grad():
        got = head.circuit(torch.from_numpy(x).to(head.dtype), torch.from_numpy(w).to(head.dtype)).double().numpy()
    worst = 0.0
    for i in range(samples):
        values = dict(zip(hc.inputs, x[i], strict=True)) | dict(zip(hc.weights, w, strict=True))
        ref = Statevector(hc.circuit.assign_parameters(values)).probabilities()
        worst = max(worst, float(np.abs(got[i] - ref).max()))
    return worst


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def measure(row: Row, threads: int) -> dict[str, Any]:
    """One row, in this (fresh) process."""
    torch.set_num_threads(threads)
    before = _rss_kib()
    try:
        head = make_head(row.sampler, row.n, threads)
    except ImportError as e:
        return {"sampler": row.sampler, "qubits": row.n, "skipped": f"not importable: {e.name}"}
    ms, steps = time_step(head_step(head, row.batch), row.budget, row.reps, row.warmup)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = {"sampler": row.sampler, "qubits": row.n, "batch": BATCH, "ms": round(ms * BATCH / row.batch, 4),
           "steps": steps, "measured_batch": row.batch, "extrapolated": row.batch != BATCH,
           "peak_rss_mib": round(peak / 1024, 1), "peak_rss_delta_mib": round((peak - before) / 1024, 1)}
    return out | {"max_abs_err": max_abs_err(head, row.n)}


def run_row(row: Row, threads: int, log: Callable[[str], None]) -> dict[str, Any] | None:
    """`measure` in a child process; None (logged) when it fails."""
    cmd = [sys.executable, __file__, "--row", f"{row.sampler}:{row.n}", "--threads", str(threads)]
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        log(f"  {row.sampler} n={row.n} failed:\n{done.stderr[-2000:]}")
        return None
    r: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if "skipped" in r:
        log(f"  {row.sampler:<15} n={row.n:<2} skipped ({r['skipped']})")
        return None
    log(f"  {r['sampler']:<15} n={r['qubits']:<2} {r['ms']:12.3f} ms  err {r['max_abs_err']:.1e}  "
        f"peak {r['peak_rss_mib']:.0f} MiB (+{r['peak_rss_delta_mib']:.0f})" + ("  extrapolated" * r["extrapolated"]))
    return r


def flagship_share(head_ms: float) -> dict[str, float] | None:
    """Head time as a share of a resnet18 (128 px, batch 32) forward+backward plus the head."""
    try:
        import torchvision
    except ImportError:
        return None
    net = torchvision.models.resnet18(num_classes=16)
    x = torch.randn(BATCH, 3, 128, 128)

    def step() -> None:
        net.zero_grad(set_to_none=True)
        net(x).sum().backward()

    ms, _ = time_step(step, budget_s=3.0, max_reps=3, warmup=1)
    return {"backbone_ms": ms, "head_ms": head_ms, "share": head_ms / (ms + head_ms)}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "qiskit", "qiskit-aer", "qiskit-machine-learning", "pennylane", "pennylane-lightning"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def run(quick: bool, log: Callable[[str], None], threads: int = 1) -> dict[str, Any]:
    start, load = time.perf_counter(), os.getloadavg()
    results = [r for r in (run_row(row, threads, log) for row in plan(quick)) if r is not None]
    base = {r["qubits"]: r["ms"] for r in results if r["sampler"] == "torch-exact"}
    for r in results:
        r["x_torch_exact"] = round(r["ms"] / base[r["qubits"]], 2) if r["qubits"] in base else None
    torch.set_num_threads(threads)
    return {
        "results": results,
        "max_abs_err_vs_qiskit": max(r["max_abs_err"] for r in results if r["sampler"] == "torch-exact"),
        "flagship_share_n4": flagship_share(base[4]),
        "torch_threads": threads,
        "memory": "peak_rss_mib: ru_maxrss of the row's own process; peak_rss_delta_mib: that less its RSS "
        "before the head was built",
        "load_average": {"start": [round(v, 2) for v in load], "end": [round(v, 2) for v in os.getloadavg()]},
        "wall_s": round(time.perf_counter() - start, 1),
        "versions": versions(),
    }


def table(out: dict[str, Any]) -> str:
    head = f"{'sampler':<16}{'qubits':>7}{'batch':>7}{'ms':>14}{'× torch-exact':>15}{'max err':>10}{'peak MiB':>10}"
    lines = [head + f"{'(+delta)':>10}"]
    for r in out["results"]:
        x = f"{r['x_torch_exact']:>15.1f}" if r["x_torch_exact"] is not None else f"{'':>15}"
        lines.append(f"{r['sampler']:<16}{r['qubits']:>7}{r['batch']:>7}{r['ms']:>14.3f}{x}{r['max_abs_err']:>10.1e}"
                     f"{r['peak_rss_mib']:>10.0f}{r['peak_rss_delta_mib']:>+10.0f}"
                     + (f"  (scaled from batch {r['measured_batch']})" if r["extrapolated"] else ""))
    lines.append(f"max |torch-exact - qiskit Statevector| = {out['max_abs_err_vs_qiskit']:.2e}")
    share = out["flagship_share_n4"]
    if share:
        lines.append(
            f"head share of a resnet18 b32 step (n=4): {100 * share['share']:.2f} % "
            f"({share['head_ms']:.2f} of {share['backbone_ms'] + share['head_ms']:.0f} ms)"
        )
    lines.append(f"load average {out['load_average']}, {out['wall_s']:.0f} s, {out['versions']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="reference samplers at n = 4 only")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: tiny kernels stall when cores are shared)",
    )
    ap.add_argument("--row", help=argparse.SUPPRESS)  # SAMPLER:N, one row in this process (internal)
    args = ap.parse_args(argv)
    if args.row:
        sampler, n = args.row.split(":")
        row = next(r for r in plan(False) if r.sampler == sampler and r.n == int(n))
        print(json.dumps(measure(row, args.threads)))
        return 0
    out = run(args.quick, (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr, flush=True)),
              args.threads)
    print(json.dumps(out) if args.json else table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
