"""Circuit cost of quantum heads: the circuit's size, and what it would take on a device.

The device numbers come from the head's sampler backend (`aer` with ``backend``, `ibm-runtime`),
or from a fixed reference device (`REFERENCE_BACKEND`, optimisation level 2, transpiler seed 0)
for samplers without one. Transpiles are cached (`qsight.quantum.device.transpile_for`), so a
device sampler's own transpile is reused and the reference one is done once per process.
Importing this module is cheap: a run without quantum heads imports no Qiskit for its summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qsight.quantum.backend_names import REFERENCE_BACKEND
from qsight.runs.layout import write_atomic

if TYPE_CHECKING:
    from qsight.quantum.circuits import HeadCircuit
    from qsight.quantum.head import QuantumHead

log = logging.getLogger("qsight.quantum")
REFERENCE_LEVEL = 2
_NOT_GATES = ("barrier", "delay")
#: The numbers of a transpile on the reference device, kept in the cache.
ON_DEVICE = ("backend", "physical_qubits", "transpiled_depth", "transpiled_two_qubit_gates", "estimated_fidelity")


def circuit_cost(
    hc: HeadCircuit,
    train_size: int,
    *,
    backend: Any = None,
    optimization_level: int = REFERENCE_LEVEL,
    seed: int | None = 0,
    shots: int | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Size of `hc` (measured, as the sampled samplers run it) and its cost on `backend` (None: reference).

    ``depth`` and ``transpiled_depth`` count the measurement layer. ``estimated_fidelity`` is the
    product over the transpiled circuit's instructions of (1 − error) from the backend's Target:
    gate errors, and readout errors of the measured qubits. ``circuits_per_epoch`` =
    ``train_size × (1 + 2 K)``, K = ``gate_angles``, the circuit's parametrised gates: one
    circuit per training sample, plus each gate angle shifted by ±π/2 for the parameter-shift
    gradient (an input angle enters several gates, non-linearly in the zz feature map, so the
    rule applies per gate), which is what the `aer` and `ibm-runtime` samplers run.
    """
    from qsight.quantum.device import Program, fake_backend, transpile_for
    from qsight.quantum.shift import gate_angle_circuit

    measured, polys = gate_angle_circuit(hc)
    cached = _cache_file(measured, optimization_level, seed, cache_dir) if backend is None else None
    on_device = _read_cached(cached)
    if on_device is None:
        device = backend if backend is not None else fake_backend(REFERENCE_BACKEND)
        dc = transpile_for(Program.of(measured), device, optimization_level, seed)
        on_device = {"backend": dc.backend, "physical_qubits": list(dc.physical), "transpiled_depth": dc.depth,
                     "transpiled_two_qubit_gates": dc.two_qubit_gates,
                     "estimated_fidelity": round(dc.estimated_fidelity(), 6)}
        if cached is not None:
            write_atomic(cached, json.dumps(on_device))
    gates = [ins for ins in measured.data if ins.operation.name not in _NOT_GATES]
    return {
        "qubits": hc.num_qubits,
        "parameters": len(hc.inputs) + len(hc.weights),
        "weights": len(hc.weights),
        "gate_angles": len(polys),
        "depth": int(measured.depth(lambda ins: ins.operation.name not in _NOT_GATES)),
        "two_qubit_gates": sum(1 for ins in gates if len(ins.qubits) == 2),
        "backend": on_device["backend"],
        "reference_backend": backend is None,
        "optimization_level": optimization_level,
        **{k: on_device[k] for k in ON_DEVICE[1:]},
        "shots": shots,
        "circuits_per_epoch": train_size * (1 + 2 * len(polys)),
    }


def _cache_file(measured: Any, level: int, seed: int | None, cache_dir: Path | None) -> Path | None:
    """Where the reference device's numbers for `measured` are kept: a fixed device and transpiler seed give
    the same transpile every time (about 1 s saved per run; a sweep's trials share one)."""
    if cache_dir is None or seed is None:
        return None
    import qiskit
    from qiskit import qasm3

    text = "\n".join([qasm3.dumps(measured), REFERENCE_BACKEND, str(level), str(seed), qiskit.__version__])
    return cache_dir / "transpiled" / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"


def _read_cached(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and set(ON_DEVICE) <= set(found) else None  # else transpiled again


def head_cost(head: QuantumHead, train_size: int, cache_dir: Path | None = None) -> dict[str, Any]:
    """`circuit_cost` of a built head, on its sampler's backend when it has one."""
    from qsight.quantum.circuits import CircuitSpec, build_circuit

    sampler = head.sampler
    backend = getattr(sampler, "backend", None)
    sampler_params = getattr(sampler, "params", None)
    kwargs: dict[str, Any] = {"shots": sampler.describe().get("shots")}
    if backend is not None:
        kwargs |= {
            "backend": backend,
            "optimization_level": getattr(sampler, "optimization_level", REFERENCE_LEVEL),
            "seed": getattr(sampler_params, "seed", None),
        }
    return circuit_cost(build_circuit(CircuitSpec.from_params(head.params)), train_size, cache_dir=cache_dir,
                        **kwargs)


def quantum_costs(heads: Iterable[tuple[str, Any]], train_size: int,
                  cache_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """``{head name: cost}`` for every quantum head of (name, head) pairs; a failed one gets ``{"error": …}``.
    Reference-device numbers are kept in `cache_dir` (``<output root>/cache``) when given."""
    out: dict[str, dict[str, Any]] = {}
    module = sys.modules.get("qsight.quantum.head")  # not imported: no quantum head was built
    for name, head in heads:
        if module is None or not isinstance(head, module.QuantumHead):
            continue
        try:
            out[name] = head_cost(head, train_size, cache_dir)
        except Exception as exc:  # the report must never fail a run that has finished
            log.warning("circuit cost of head %r failed: %s", name, exc)
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out
