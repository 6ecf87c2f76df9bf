"""Quantum head forward+backward time per sampler, and torch-exact's error against Qiskit.

    python benchmarks/quantum_head.py            # n = 4, 8 (12 for torch-exact); minutes
    python benchmarks/quantum_head.py --quick    # reference samplers at n = 4 only; ~1 minute
    python benchmarks/quantum_head.py --json     # one JSON object for scripts
    python benchmarks/quantum_head.py --threads 2

Timings are medians; `x_torch_exact` is each time over torch-exact's (float64) at the same n.

Circuit: ZZ feature map (reps 2, full) + RealAmplitudes (reps 2, reverse_linear), probabilities
readout; batch 32, 16 input features, 5 classes. One step = logits → cross entropy → backward.
PennyLane (`default.qubit`, backprop) is timed when it is importable.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from qsight.quantum import QuantumHeadParams, quantum_head
from qsight.quantum.circuits import CircuitSpec, build_circuit
from qsight.quantum.torch_exact import TorchCircuit

BATCH, IN_DIM, CLASSES = 32, 16, 5


def time_step(step: Callable[[], None], budget_s: float, max_reps: int, warmup: int) -> float:
    """Median milliseconds of `step` over up to `max_reps` runs within about `budget_s`."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def head_step(head: nn.Module) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(BATCH, IN_DIM, generator=g), torch.randint(0, CLASSES, (BATCH,), generator=g)

    def step() -> None:
        head.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(head(x), y).backward()  # type: ignore[no-untyped-call]

    return step


def qsight_head(sampler: dict[str, Any], n: int) -> nn.Module:
    torch.manual_seed(0)
    return quantum_head(QuantumHeadParams.model_validate({"qubits": n, "sampler": sampler}), IN_DIM, CLASSES)


def pennylane_head(n: int) -> nn.Module | None:
    """The same circuit in PennyLane (default.qubit, backprop, broadcast over the batch)."""
    try:
        import pennylane as qml
    except ImportError:
        return None
    dev = qml.device("default.qubit", wires=n)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    ra_pairs = [(i, i + 1) for i in range(n - 1)][::-1]

    @qml.qnode(dev, interface="torch", diff_method="backprop")  # type: ignore[misc,untyped-decorator]
    def circuit(x: torch.Tensor, w: torch.Tensor) -> Any:
        for _ in range(2):
            for q in range(n):
                qml.Hadamard(q)
                qml.PhaseShift(2 * x[..., q], q)
            for i, j in pairs:
                qml.CNOT([i, j])
                qml.PhaseShift(2 * (math.pi - x[..., i]) * (math.pi - x[..., j]), j)
                qml.CNOT([i, j])
        for r in range(3):
            for q in range(n):
                qml.RY(w[r * n + q], q)
            if r < 2:
                for i, j in ra_pairs:
                    qml.CNOT([i, j])
        return qml.probs(wires=list(range(n))[::-1])  # Qiskit's bit order

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.proj = nn.LayerNorm(IN_DIM), nn.Linear(IN_DIM, n)
            self.weights = nn.Parameter(torch.rand(3 * n, dtype=torch.float64))
            self.readout = nn.Linear(2**n, CLASSES)

        def forward(self, f: torch.Tensor) -> torch.Tensor:
            a = math.pi * torch.tanh(self.proj(self.norm(f))).double()
            out: torch.Tensor = self.readout(circuit(a, self.weights).float())
            return out

    return Head()


def max_abs_err(sizes: list[int]) -> float:
    """Largest |p_torch - p_qiskit| over random inputs and weights of the benchmark circuits."""
    from qiskit.quantum_info import Statevector

    worst, rng = 0.0, np.random.default_rng(0)
    for n in sizes:
        hc = build_circuit(CircuitSpec(n))
        x, w = rng.uniform(-np.pi, np.pi, (2, n)), rng.uniform(-np.pi, np.pi, len(hc.weights))
        got = TorchCircuit(hc)(torch.from_numpy(x), torch.from_numpy(w)).numpy()
        for i in range(len(x)):
            values = dict(zip(hc.inputs, x[i], strict=True)) | dict(zip(hc.weights, w, strict=True))
            ref = Statevector(hc.circuit.assign_parameters(values)).probabilities()
            worst = max(worst, float(np.abs(got[i] - ref).max()))
    return worst


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

    ms = time_step(step, budget_s=3.0, max_reps=3, warmup=1)
    return {"backbone_ms": ms, "head_ms": head_ms, "share": head_ms / (ms + head_ms)}


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    results: list[dict[str, Any]] = []

    def record(sampler: str, n: int, ms: float) -> None:
        results.append({"sampler": sampler, "qubits": n, "batch": BATCH, "ms": round(ms, 4)})
        log(f"  {sampler:<12} n={n:<2} {ms:12.3f} ms")

    for n in (4, 8, 12):
        for dtype in ("float64", "float32"):
            name = "torch-exact" + ("" if dtype == "float64" else "-f32")
            head = qsight_head({"type": "torch-exact", "dtype": dtype}, n)
            record(name, n, time_step(head_step(head), 2.0, 200, warmup=5))
        if n == 12:
            continue
        if not quick or n == 4:
            pl = pennylane_head(n)
            if pl is not None:
                record("pennylane", n, time_step(head_step(pl), 3.0, 20, warmup=2))
            record("aer", n, time_step(head_step(qsight_head({"type": "aer"}, n)), 1.0, 3, warmup=0))
            sv = qsight_head({"type": "statevector"}, n)
            record("statevector", n, time_step(head_step(sv), 1.0, 2 if n == 4 else 1, warmup=0))
    base = {r["qubits"]: r["ms"] for r in results if r["sampler"] == "torch-exact"}
    for r in results:
        r["x_torch_exact"] = round(r["ms"] / base[r["qubits"]], 2)
    share_n4 = flagship_share(base[4])
    return {
        "results": results,
        "max_abs_err_vs_qiskit": max_abs_err([4, 8] if quick else [4, 8, 12]),
        "flagship_share_n4": share_n4,
        "torch_threads": torch.get_num_threads(),
    }


def table(out: dict[str, Any]) -> str:
    lines = [f"{'sampler':<14}{'qubits':>7}{'batch':>7}{'ms':>14}{'× torch-exact':>16}"]
    for r in out["results"]:
        lines.append(f"{r['sampler']:<14}{r['qubits']:>7}{r['batch']:>7}{r['ms']:>14.3f}{r['x_torch_exact']:>16.1f}")
    lines.append(f"max |torch-exact - qiskit Statevector| = {out['max_abs_err_vs_qiskit']:.2e}")
    share = out["flagship_share_n4"]
    if share:
        lines.append(
            f"head share of a resnet18 b32 step (n=4): {100 * share['share']:.2f} % "
            f"({share['head_ms']:.2f} of {share['backbone_ms'] + share['head_ms']:.0f} ms)"
        )
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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = run(args.quick, (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr, flush=True)))
    print(json.dumps(out) if args.json else table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
