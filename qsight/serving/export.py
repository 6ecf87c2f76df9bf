"""Export a trained run: ONNX or a torch.export program, checked against torch on the run's validation images.

The exported module maps normalised images (B, 3, S, S) to the class probabilities (B, K) of one
output (the ensemble by default), the batch size left free. Quantum heads are simulated in real
arithmetic (`real_circuit.RealCircuit`, the torch-exact statevector); a head trained or configured
on another sampler (Qiskit, Aer) is exported as its torch-exact equivalent, the same circuit with
the same weights: exact probabilities where that sampler would sample shots or add noise (the
export's notes say so).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from qsight.config.toml_io import load_run_spec
from qsight.errors import BadInputError, RunFailedError
from qsight.metric_names import ENSEMBLE
from qsight.models.combiner import mix
from qsight.models.hybrid import HybridModel
from qsight.runs.layout import RunLayout
from qsight.serving.loader import TrainedModel, load_trained
from registry import component_type

log = logging.getLogger("qsight.serving")

Format = Literal["onnx", "torch-export"]
FORMATS: tuple[Format, ...] = ("onnx", "torch-export")
SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2"}
TOLERANCE = 1e-4  # largest absolute probability difference the check accepts
EXACT = "torch-exact"


@dataclass
class ExportResult:
    """What an export wrote and how closely it reproduces torch."""

    format: str
    file: str
    max_abs_diff: float
    samples: int
    output: str = ENSEMBLE
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Probabilities(nn.Module):
    """images (B, 3, S, S) → probabilities (B, K) of one output: a head's softmax, or the ensemble.

    The model's parts are held under plain names (heads by position, the ensemble's weights as a
    constant), so head names such as ``global`` never become attribute names in exported code.
    """

    log_weights: Tensor
    neck: nn.Module | None

    def __init__(self, model: HybridModel, output: str = ENSEMBLE) -> None:
        super().__init__()
        names = model.active_heads if output == ENSEMBLE else (output,)
        self.backbone, self.ensemble = model.backbone, output == ENSEMBLE
        self.register_module("neck", model.neck)
        self.heads = nn.ModuleList(model.heads[n] for n in names)
        self.sources = [model.head_inputs[n] for n in names]
        with torch.no_grad():
            log_w = model.combiner.log_weights(list(names), torch.zeros(()))
        self.register_buffer("log_weights", log_w.detach().clone())

    def forward(self, images: Tensor) -> Tensor:
        feats = {"backbone": self.backbone(images)}
        if self.neck is not None:
            feats["neck"] = self.neck(feats["backbone"])
        logits = [head(feats[source]) for head, source in zip(self.heads, self.sources, strict=True)]
        if self.ensemble:
            return mix(logits, self.log_weights).exp()
        return torch.softmax(logits[0].float(), dim=1)


def exact_overrides(run_dir: Path, overrides: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Overrides that put every quantum head of a run (as `overrides` leave it) on torch-exact, and a note
    for each head they move."""
    spec = load_run_spec(RunLayout(run_dir).spec, overrides)
    overrides, notes = [], []
    for name, head in spec.model.heads.items():
        sampler = getattr(head, "sampler", None)
        if component_type(head) == "quantum" and sampler is not None and component_type(sampler) != EXACT:
            overrides.append(f'model.heads.{name}.sampler={{type="{EXACT}"}}')
            notes.append(f"head {name!r}: sampler {component_type(sampler)!r} exported as its torch-exact "
                         "equivalent (same circuit and weights; exact probabilities, no shots or noise)")
    return overrides, notes


def use_real_circuits(model: HybridModel) -> list[str]:
    """Swap each quantum head's torch-exact circuit for the real-arithmetic one; returns those heads."""
    from qsight.quantum.circuits import CircuitSpec, build_circuit
    from qsight.quantum.head import QuantumHead
    from qsight.quantum.torch_exact import TorchExactSampler
    from qsight.serving.real_circuit import RealCircuit

    swapped = []
    for name, head in model.heads.items():
        if isinstance(head, QuantumHead):
            if not isinstance(head.sampler, TorchExactSampler):
                raise BadInputError(f"head {name!r}: only torch-exact circuits export (sampler {head.sampler.name!r})")
            circuit = RealCircuit(build_circuit(CircuitSpec.from_params(head.params)), head.sampler.dtype)
            head.circuit = circuit.to(next(head.parameters()).device)
            swapped.append(name)
    return swapped


def tidy_empty_buffers(module: nn.Module) -> None:
    """Give empty buffers ordinary strides: torch.export.save fails on the zero strides numpy leaves them."""
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.numel() == 0:
                sub._buffers[name] = torch.empty(buf.shape, dtype=buf.dtype, device=buf.device)


def check_images(trained: TrainedModel, samples: int) -> tuple[Tensor, str | None]:
    """Up to `samples` validation images of the run, or random inputs (and why) when its data is unavailable."""
    from qsight.experiment.build import build_data

    try:
        val = build_data(trained.spec).val
        n = min(samples, len(val))  # type: ignore[arg-type]
        return torch.stack([val[i][0] for i in range(n)]), None
    except BadInputError as exc:
        size = trained.spec.data.image_size  # type: ignore[attr-defined]
        why = f"the run's validation images are unavailable ({exc}): checked on {samples} random inputs"
        return torch.randn(samples, 3, size, size, generator=torch.Generator().manual_seed(0)), why


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter prints progress on stdout; keep it in the log."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        if buffer.getvalue().strip():
            log.info("exporter: %s", buffer.getvalue().strip())


def _program(module: nn.Module, example: Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        return torch.export.export(module, (example,), dynamic_shapes={"images": {0: batch}}, strict=False)
    except Exception as exc:
        raise RunFailedError(f"torch.export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc


def write_onnx(module: nn.Module, example: Tensor, out: Path) -> None:
    program = _program(module, example)
    with _quiet():
        onnx_program = torch.onnx.export(program, (example,), dynamo=True, external_data=False,
                                         input_names=["images"], output_names=["probabilities"])
    if onnx_program is None:
        raise RunFailedError("torch.onnx.export returned no program")
    onnx_program.save(str(out))


def run_onnx(path: Path, images: Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    return out


def run_program(path: Path, images: Tensor) -> np.ndarray:
    module = torch.export.load(str(path)).module()
    with torch.inference_mode():
        out: np.ndarray = module(images).numpy()
    return out


def default_out(run_dir: Path, fmt: Format, output: str) -> Path:
    name = "model" if output == ENSEMBLE else f"model-{output}"
    return RunLayout(run_dir).exports / f"{name}{SUFFIX[fmt]}"


def export_run(
    run_dir: Path, fmt: Format = "onnx", out: Path | None = None, *, output: str = ENSEMBLE,
    checkpoint: str = "last", samples: int = 64, overrides: Sequence[str] = (),
) -> ExportResult:
    """Export `output` (a head or the ensemble) of a run and check the file against torch on `samples` images."""
    if fmt not in FORMATS:
        raise BadInputError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    exact, notes = exact_overrides(run_dir, overrides)
    trained = load_trained(run_dir, [*overrides, *exact], checkpoint=checkpoint, device="cpu")
    trained.check_target(output)
    images, why = check_images(trained, samples)
    notes += [why] if why else []
    expected = trained.probabilities(images)[output].numpy()
    use_real_circuits(trained.model)
    module = Probabilities(trained.model, output).eval()
    tidy_empty_buffers(module)
    out = out or default_out(run_dir, fmt, output)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = images[:4] if len(images) >= 2 else images.repeat(2, 1, 1, 1)  # a batch of 1 would be fixed
    if fmt == "onnx":
        write_onnx(module, example, out)
        got = run_onnx(out, images)
    else:
        torch.export.save(_program(module, example), str(out))
        got = run_program(out, images)
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    log.info("exported %s of %s to %s: max |Δp| %.3g over %d images", output, run_dir, out, diff, len(images))
    return ExportResult(fmt, str(out), diff, len(images), output, notes)
