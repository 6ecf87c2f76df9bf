"""Real devices' view of a circuit: fake backends, transpilation (layout chosen once) and device noise.

`transpile_for` maps a measured gate-angle circuit onto a backend's coupling map and basis gates
once per (circuit, backend, optimisation level, seed) and caches it, so the sampler and the cost
report share one layout. `compact` keeps only the physical qubits the transpiled circuit touches,
renumbered, with the device's noise model for just those qubits: the same errors Aer's
``NoiseModel.from_backend`` gives them (delays aside; these circuits have none), without building
and shipping a 133-qubit model on every call.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import Gate
from qiskit.transpiler import Target, generate_preset_pass_manager
from qiskit_aer.noise import NoiseModel
from qiskit_aer.noise.device import basic_device_gate_errors, basic_device_readout_errors

from qsight.quantum.backend_names import check_fake_backend, fake_backend_classes

log = logging.getLogger("qsight.quantum")
_NOT_GATES = ("barrier", "delay")
_lock = threading.Lock()


@cache
def fake_backend(name: str) -> Any:
    """The fake backend `name` (snake case, e.g. 'fake_torino'); one instance per name and process."""
    import qiskit_ibm_runtime.fake_provider as fake_provider

    return getattr(fake_provider, fake_backend_classes()[check_fake_backend(name)])()


@dataclass(frozen=True)
class Program:
    """A measured gate-angle circuit, hashable by its instructions (a cache key)."""

    circuit: QuantumCircuit = field(compare=False, hash=False)
    ops: tuple[tuple[str, tuple[str, ...], tuple[int, ...]], ...] = ()

    @classmethod
    def of(cls, circuit: QuantumCircuit) -> Program:
        ops = tuple(
            (ins.operation.name, tuple(str(p) for p in ins.operation.params),
             tuple(circuit.find_bit(q).index for q in ins.qubits))
            for ins in circuit.data
        )
        return cls(circuit, ops)


@dataclass(frozen=True)
class DeviceCircuit:
    """A circuit transpiled for a backend: the full-width ISA circuit and the physical qubits it uses."""

    backend: str
    isa: QuantumCircuit
    physical: tuple[int, ...]
    target: Target

    @property
    def two_qubit_gates(self) -> int:
        return sum(1 for ins in self.isa.data if len(ins.qubits) == 2 and ins.operation.name not in _NOT_GATES)

    @property
    def depth(self) -> int:
        return int(self.isa.depth(lambda ins: ins.operation.name not in _NOT_GATES))

    def estimated_fidelity(self) -> float:
        """Π over instructions of (1 − error) from the Target: gates, and measurements (readout)."""
        fidelity = 1.0
        for ins in self.isa.data:
            name = ins.operation.name
            if name in _NOT_GATES or name not in self.target.operation_names:
                continue
            props = self.target[name].get(tuple(self.isa.find_bit(q).index for q in ins.qubits))
            if props is not None and props.error is not None:
                fidelity *= 1.0 - props.error
        return fidelity


@lru_cache(maxsize=64)
def transpile_for(program: Program, backend: Any, optimization_level: int, seed: int | None) -> DeviceCircuit:
    """`program` as an ISA circuit of `backend` (layout and routing chosen here, once per key)."""
    with _lock:
        pm = generate_preset_pass_manager(
            optimization_level=optimization_level, target=backend.target, seed_transpiler=seed
        )
        isa = pm.run(program.circuit)
    used = {isa.find_bit(q).index for ins in isa.data if ins.operation.name not in _NOT_GATES for q in ins.qubits}
    physical = tuple(sorted(used))
    log.info(
        "transpiled for %s (optimisation level %d): depth %d, %d ops, physical qubits %s",
        backend.name, optimization_level, isa.depth(), len(isa.data), list(physical),
    )
    return DeviceCircuit(backend.name, isa, physical, backend.target)


def sub_target(target: Target, physical: tuple[int, ...]) -> Target:
    """The part of `target` on `physical` qubits, renumbered 0..m-1 (gates, measure and properties)."""
    index = {p: i for i, p in enumerate(physical)}
    props = target.qubit_properties
    sub = Target(
        num_qubits=len(physical), dt=target.dt,
        qubit_properties=[props[p] for p in physical] if props else None,
    )
    for name in target.operation_names:
        qmap = target[name]
        op = target.operation_from_name(name)
        if qmap is None or isinstance(op, type):  # control flow and other global entries
            continue
        kept = {
            tuple(index[q] for q in qargs): p
            for qargs, p in qmap.items()
            if qargs is not None and all(q in index for q in qargs)
        }
        if kept:
            sub.add_instruction(op, kept, name=name)
    return sub


def noise_model_for(target: Target) -> NoiseModel:
    """Aer's device noise (depolarising + thermal relaxation per gate, readout errors) from `target`."""
    basis = [n for n in target.operation_names if isinstance(target.operation_from_name(n), Gate)]
    model = NoiseModel(basis_gates=basis)
    for qubits, error in basic_device_readout_errors(target=target):
        model.add_readout_error(error, qubits)
    for name, qubits, error in basic_device_gate_errors(target=target):
        model.add_quantum_error(error, name, qubits)
    return model


def compact(dc: DeviceCircuit) -> tuple[QuantumCircuit, NoiseModel]:
    """The ISA circuit on its used qubits only (renumbered; barriers dropped) and their noise model."""
    index = {p: i for i, p in enumerate(dc.physical)}
    isa = dc.isa
    out = QuantumCircuit(len(dc.physical), global_phase=isa.global_phase)
    for creg in isa.cregs:
        out.add_register(creg)
    for ins in isa.data:
        if ins.operation.name in _NOT_GATES:
            continue
        qubits = [out.qubits[index[isa.find_bit(q).index]] for q in ins.qubits]
        out.append(ins.operation, qubits, ins.clbits)
    return out, noise_model_for(sub_target(dc.target, dc.physical))
