"""The `ibm-runtime` sampler: IBM Quantum through qiskit-ibm-runtime, in batch mode.

qiskit-ibm-runtime 0.50 deprecated its ``SamplerV2`` in favour of the client-side Sampler built on
the Executor primitive, ``qiskit_ibm_runtime.executor_sampler.Sampler``: this sampler uses it, in
a ``Batch`` opened at the first call. Circuits are transpiled for the device once
(`qsight.quantum.device`); each batch of samples (with its parameter-shifted angle sets) is one PUB
of one job. A real device needs an API token in ``QISKIT_IBM_TOKEN`` (checked when the sampler is
built); a fake backend name (``fake_torino``) runs the same code in qiskit-ibm-runtime's local
testing mode, which rebuilds the fake device's full noise model on every call: slow on large
devices, so `aer` with ``backend`` is the fast way to simulate device noise.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

import numpy as np
from torch import nn

from qsight.errors import BadInputError
from qsight.quantum.backend_names import is_fake
from qsight.quantum.circuits import HeadCircuit
from qsight.quantum.device import Program, fake_backend, transpile_for
from qsight.quantum.params import IbmRuntimeParams
from qsight.quantum.shift import ShiftCircuit, check_shift_rule, gate_angle_circuit, probabilities

log = logging.getLogger("qsight.quantum")
TOKEN_ENV = "QISKIT_IBM_TOKEN"


def require_token(backend: str) -> str | None:
    """The API token a real device needs (None for a fake backend); BadInputError when it is missing."""
    if is_fake(backend):
        return None
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise BadInputError(
            f"sampler ibm-runtime: backend {backend!r} is an IBM Quantum device and needs an API token "
            f"in the environment variable {TOKEN_ENV} (or name a fake backend, e.g. 'fake_torino', to run locally)"
        )
    return token


def open_backend(p: IbmRuntimeParams, token: str) -> Any:
    """The IBM Quantum backend named in `p`; BadInputError when the service refuses (token, instance, name)."""
    from qiskit_ibm_runtime import QiskitRuntimeService

    try:
        service = QiskitRuntimeService(channel=p.channel, token=token, instance=p.instance)
        return service.backend(p.backend)
    except Exception as exc:  # the client raises many kinds (account, network, unknown backend)
        raise BadInputError(f"sampler ibm-runtime: cannot open IBM Quantum backend {p.backend!r}: {exc}") from exc


def quiet_client_logs() -> None:
    """The client logs three INFO lines a job through its own handler; keep WARNING and up unless asked.

    ``QISKIT_IBM_RUNTIME_LOG_LEVEL`` (the client's own setting) still wins."""
    client = logging.getLogger("qiskit_ibm_runtime")
    if "QISKIT_IBM_RUNTIME_LOG_LEVEL" not in os.environ and client.level == logging.NOTSET:
        client.setLevel(logging.WARNING)


class IbmRuntimeSampler:
    """IBM Quantum (or a fake device in local mode) through the client-side Sampler, batch mode."""

    name = "ibm-runtime"

    def __init__(self, p: IbmRuntimeParams) -> None:
        self.params = p
        token = require_token(p.backend)
        quiet_client_logs()
        self.local = token is None
        self.backend = fake_backend(p.backend) if token is None else open_backend(p, token)
        self.optimization_level = p.optimization_level
        self.lock = threading.Lock()
        self._sampler: Any = None
        self.jobs: list[str] = []
        log.info(
            "ibm-runtime sampler on %s (%s), shots %d, optimisation level %d",
            p.backend, "local testing mode" if self.local else "IBM Quantum", p.shots, p.optimization_level,
        )

    def primitive(self) -> Any:
        """The client-side Sampler in a Batch, opened on first use and closed with this object."""
        if self._sampler is None:
            from qiskit_ibm_runtime import Batch
            from qiskit_ibm_runtime.executor_sampler import Sampler

            p = self.params
            batch = Batch(backend=self.backend)
            weakref.finalize(self, batch.close)
            options: dict[str, Any] = {"default_shots": p.shots}
            if self.local and p.seed is not None:
                options["simulator"] = {"seed_simulator": p.seed}
            self._sampler = Sampler(mode=batch, options=options)
        return self._sampler

    def bind(self, circuit: HeadCircuit) -> nn.Module:
        p = self.params
        measured, polys = gate_angle_circuit(circuit)
        dc = transpile_for(Program.of(measured), self.backend, p.optimization_level, p.seed)
        gradient = p.gradient != "none"
        if gradient:
            check_shift_rule(dc.isa, len(polys))
        n = circuit.num_qubits

        def run(sets: np.ndarray) -> np.ndarray:
            job = self.primitive().run([(dc.isa, sets)])
            self.jobs.append(str(job.job_id()))
            log.info("ibm-runtime job %s: %d circuits × %d shots on %s",
                     self.jobs[-1], int(np.prod(sets.shape[:-1])), p.shots, p.backend)
            return probabilities(job.result()[0].data.meas, n)

        return ShiftCircuit(circuit, polys, run, gradient, self.lock)

    def describe(self) -> dict[str, object]:
        p = self.params
        return {
            "sampler": self.name,
            "backend": p.backend,
            "mode": "local testing mode" if self.local else "IBM Quantum, batch",
            "primitive": "qiskit_ibm_runtime.executor_sampler.Sampler",
            "shots": p.shots,
            "optimization_level": p.optimization_level,
            "channel": p.channel,
            "instance": p.instance,
            "seed": p.seed if self.local else None,
            "exact": False,
            "gradient": p.gradient,
        }
