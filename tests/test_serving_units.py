"""Parts of qsight.serving that need no trained run: the real-arithmetic circuit, the export wrapper, inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from qsight.errors import BadInputError
from qsight.quantum.circuits import CircuitSpec, build_circuit
from qsight.quantum.torch_exact import TorchCircuit
from qsight.serving.inputs import collect_inputs
from qsight.serving.real_circuit import RealCircuit

SPECS = [
    CircuitSpec(3, reps=1),
    CircuitSpec(4),
    CircuitSpec(8, feature_map_reps=1),  # the flagship's circuit
    CircuitSpec(2, "angle", ansatz="efficient-su2"),
    CircuitSpec(6, "z", ansatz="efficient-su2", entanglement="circular"),
    CircuitSpec(1),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.qubits}q-{s.feature_map}-{s.ansatz}")
def test_real_circuit_agrees_with_torch_exact(spec: CircuitSpec) -> None:
    hc = build_circuit(spec)
    gen = torch.Generator().manual_seed(spec.qubits)
    x = torch.randn(5, len(hc.inputs), dtype=torch.float64, generator=gen) * 2
    w = torch.randn(len(hc.weights), dtype=torch.float64, generator=gen) * 2
    expected = TorchCircuit(hc)(x, w)
    got = RealCircuit(hc)(x, w)
    assert got.shape == expected.shape == (5, 2**spec.qubits)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
    assert not got.is_complex()


@pytest.mark.slow
def test_real_circuit_has_no_complex_tensor_and_exports_to_onnx(tmp_path: Path) -> None:
    import onnxruntime as ort

    hc = build_circuit(CircuitSpec(3, reps=1))
    circuit = RealCircuit(hc, torch.float32)
    assert not any(b.is_complex() for b in circuit.buffers())
    w = torch.linspace(-1, 1, len(hc.weights))

    class Head(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return circuit(x, w)

    x = torch.rand(4, len(hc.inputs)) * 3
    program = torch.export.export(Head(), (x,), dynamic_shapes={"x": {0: torch.export.Dim("b", min=1)}})
    path = tmp_path / "circuit.onnx"
    onnx_program = torch.onnx.export(program, (x,), dynamo=True, external_data=False)
    assert onnx_program is not None
    onnx_program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.rand(7, len(hc.inputs)) * 3
    got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    expected = TorchCircuit(hc)(batch.double(), w.double()).numpy()
    assert np.abs(got - expected).max() < 1e-5


def test_inputs_files_folders_and_csv(tmp_path: Path) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/x.png", "a/deep/y.JPG", "a/notes.txt", "b.png"):
        (tmp_path / name).write_bytes(b"")
    images = tmp_path / "train_images"
    images.mkdir()
    (tmp_path / "labels.csv").write_text("id_code,diagnosis\nimg1,0\nimg2,3\n")
    (tmp_path / "paths.csv").write_text("path\na/x.png\n")
    found = collect_inputs([str(tmp_path / "a"), str(tmp_path / "b.png"), str(tmp_path / "labels.csv"),
                            str(tmp_path / "paths.csv")])
    assert found == [tmp_path / "a/deep/y.JPG", tmp_path / "a/x.png", tmp_path / "b.png",
                     images / "img1.png", images / "img2.png", tmp_path / "a/x.png"]


def test_inputs_bad_paths_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        collect_inputs([str(tmp_path / "missing.png")])
    (tmp_path / "odd.csv").write_text("name,label\nx,1\n")
    with pytest.raises(BadInputError, match="no column naming images"):
        collect_inputs([str(tmp_path / "odd.csv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no images found"):
        collect_inputs([str(tmp_path / "empty")])
