"""Using a trained run end to end: predict, evaluate (another sampler), export, the MLflow Model, the W&B
model artifact, weights-only loading. One small real run (every sink on) serves the whole module."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from qsight.config.toml_io import load_spec
from qsight.errors import BadInputError
from tests.helpers import cli, summary, tiny_spec

AER = 'model.heads.quantum.sampler={type="aer", shots=1024}'
REGISTERED = "serve-model"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A completed tiny run (three stages, quantum head on torch-exact), MLflow and W&B sinks on."""
    tmp = tmp_path_factory.mktemp("serving")
    spec = tiny_spec(tmp, sinks=True, name="serve", data__train_size=48, data__val_size=24, explain__samples=2,
                     sinks__mlflow__register=REGISTERED)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        done = cli("run", str(spec), "--run-dir", str(tmp / "run"))
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Downloading artifacts" not in done.stderr  # MLflow's bar while logging the model stays off stderr
        yield tmp / "run"


@pytest.fixture(scope="module")
def val_images(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The run's validation images as PNG files (lossless), with the run's data bundle."""
    from PIL import Image

    from qsight.experiment.build import build_data

    data = build_data(load_spec(trained / "spec.toml"))
    folder = tmp_path_factory.mktemp("val")
    for i in range(len(data.val_labels)):
        Image.fromarray(data.display_image(i)).save(folder / f"v{i:03d}.png")
    return folder, data


def mlflow_uri(trained: Path) -> str:
    return f"sqlite:///{trained.parent / 'reports' / 'mlflow.db'}"


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def final_confidence(run_dir: Path) -> list[dict[str, str]]:
    """The confidence table of the run's last validation pass (last epoch of the last stage)."""
    folder = sorted((run_dir / "visualizations" / "ensemble").glob("epoch_*"))[-1]
    return read_csv(folder / "confidence.csv")[1]


def test_predict_rows_equal_the_runs_validation_pass(trained: Path, val_images: tuple[Path, Any],
                                                     tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from qsight.serving.loader import load_trained
    from qsight.training.loop import predict

    folder, data = val_images
    bad = folder / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out, cams = tmp_path / "pred.csv", tmp_path / "cams"
    try:
        done = cli("predict", str(trained), str(folder), "--out", str(out), "--all-heads", "--gradcam", str(cams),
                   "--batch-size", "5", "--device", "cpu")
    finally:
        bad.unlink()
    assert done.returncode == 0, done.stderr[-3000:]
    names = summary(trained)["class_names"]
    header, rows = read_csv(out)
    assert header[:4 + len(names)] == ["path", "grade", "grade_name", "referable", *(f"p_{c}" for c in names)]
    assert header[-1] == "error" and "quantum_grade" in header and f"ensemble_p_{names[0]}" in header
    n = len(data.val_labels)
    assert [Path(r["path"]).name for r in rows] == [f"v{i:03d}.png" for i in range(n)] + ["zz_broken.png"]
    assert rows[-1]["grade"] == "" and "cannot read image" in rows[-1]["error"]
    assert all(r["error"] == "" for r in rows[:-1])
    got = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows[:-1]])
    # the run's own last validation pass (its confidence table, 6 decimals) ...
    table = final_confidence(trained)
    for head in ("ensemble", "quantum", "global"):
        recorded = np.array([[float(r[f"{head}_p_{c}"]) for c in names] for r in table])
        mine = np.array([[float(r[f"{head}_p_{c}"]) for c in names] for r in rows[:-1]])
        assert np.abs(mine - recorded).max() <= 5e-7 + 1e-9
    # ... and the run's validation code path on the same model, to float precision
    model = load_trained(trained).model
    val = predict(model, DataLoader(data.val, batch_size=7), torch.device("cpu"))
    assert np.abs(got - val.probs["ensemble"]).max() < 1e-6
    assert [int(r["grade"]) for r in rows[:-1]] == val.probs["ensemble"].argmax(1).tolist()
    assert {r["referable"] for r in rows[:-1]} <= {"0", "1"}
    assert len(list(cams.glob("*_gradcam.png"))) == n
    assert "1 unreadable" in done.stdout


def test_evaluate_with_an_aer_sampler_writes_its_folder_and_logs_to_mlflow(trained: Path) -> None:
    from mlflow import MlflowClient

    done = cli("evaluate", str(trained), "--set", AER, "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    folder = Path(result["folder"])
    assert folder.parent == trained / "evaluations"
    info = json.loads((folder / "evaluation.json").read_text())
    assert info["overrides"] == [AER] and info["samplers"] == {"quantum": "aer"}
    assert info["split"] == "val" and info["samples"] == 24 and info["checkpoint"].endswith("last.pt")
    for name in ("metrics.json", "confidence.csv", "confusion_ensemble.csv", "confusion_quantum.png"):
        assert (folder / name).is_file(), name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == result["metrics"] and "val/quantum/accuracy" in metrics
    final = summary(trained)["final"]
    classical = [k for k in final if k.startswith("val/global/") and "pointing" not in k and "gradcam" not in k]
    assert classical and all(metrics[k] == pytest.approx(final[k], abs=1e-6) for k in classical)
    client = MlflowClient(mlflow_uri(trained))
    logged = client.get_run(info["mlflow_run"])
    key = f"evaluations/{result['id']}/val/quantum/accuracy"
    assert logged.data.metrics[key] == pytest.approx(metrics["val/quantum/accuracy"])
    files = {Path(a.path).name for a in client.list_artifacts(info["mlflow_run"], f"evaluations/{result['id']}")}
    assert {"metrics.json", "evaluation.json", "confidence.csv"} <= files


def test_evaluate_new_labelled_data_folder_and_csv(trained: Path, val_images: tuple[Path, Any],
                                                   tmp_path: Path) -> None:
    from qsight.serving.evaluate import evaluate_run

    source, data = val_images
    names = summary(trained)["class_names"]
    by_class, aptos = tmp_path / "by-class", tmp_path / "aptos"
    (aptos / "train_images").mkdir(parents=True)
    rows = ["id_code,diagnosis"]
    for i, label in enumerate(data.val_labels):
        (by_class / names[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(source / f"v{i:03d}.png", by_class / names[label] / f"v{i:03d}.png")
        shutil.copy(source / f"v{i:03d}.png", aptos / "train_images" / f"v{i:03d}.png")
        rows.append(f"v{i:03d},{label}")
    (aptos / "labels.csv").write_text("\n".join(rows) + "\n")
    final = summary(trained)["final"]
    for where in (by_class, aptos / "labels.csv"):
        result = evaluate_run(trained, data=where, log_mlflow=False)
        assert result.split == "test" and result.info["samples"] == len(data.val_labels)
        assert result.info["data"] == str(where)
        # the run's validation images as new data: the run's final validation metrics, under split "test"
        for metric in ("accuracy", "qwk", "macro_f1"):
            assert result.metrics[f"test/ensemble/{metric}"] == pytest.approx(final[f"val/ensemble/{metric}"], abs=1e-6)
    (by_class / "grade-9").mkdir()
    with pytest.raises(BadInputError, match="'grade-9' name no class"):
        evaluate_run(trained, data=by_class, log_mlflow=False)


def test_evaluate_test_split_reproduces_the_runs_test_figures(trained: Path) -> None:
    """By default the model the run ended with (last.pt, not the best epoch of the last stage): the test
    split's values, intervals and paired differences of summary.json again."""
    done = cli("evaluate", str(trained), "--split", "test", "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result, ran = json.loads(done.stdout), summary(trained)
    assert result["metrics"] == pytest.approx(ran["test"], abs=1e-9)
    assert result["ci"].keys() == ran["test_ci"].keys() and len(result["ci"]) > 10
    for key, (low, high) in ran["test_ci"].items():
        assert result["ci"][key] == pytest.approx([low, high], abs=1e-9), key
    for pair, d in ran["test_paired"].items():
        assert result["paired"][pair]["qwk_diff"] == pytest.approx(d["qwk_diff"], abs=1e-9), pair
    folder = Path(result["folder"])
    assert {"intervals.csv", "paired.csv", "intervals.json"} <= {p.name for p in folder.iterdir()}


def test_evaluate_test_split_of_a_run_without_one_is_bad_input(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"  # the same weights, its spec without a held-out split
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("wandb", "evaluations", "exports"))
    spec = (run / "spec.toml").read_text()
    assert "test_size = 40" in spec
    (run / "spec.toml").write_text(spec.replace("test_size = 40", "test_size = 0"))
    done = cli("evaluate", str(run), "--split", "test", "--device", "cpu")
    assert done.returncode == 2
    assert "no test split" in done.stderr and "Traceback" not in done.stderr


def test_export_onnx_is_checked_and_runs_in_onnx_runtime(trained: Path, val_images: tuple[Path, Any]) -> None:
    import onnxruntime as ort

    from qsight.serving.loader import load_trained

    done = cli("export", str(trained), "--format", "onnx", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert {"format", "file", "max_abs_diff", "samples"} <= result.keys()
    assert result["format"] == "onnx" and result["samples"] == 24 and result["max_abs_diff"] <= 1e-4
    path = Path(result["file"])
    assert path == trained / "exports" / "model.onnx"
    import onnx

    model = onnx.load(str(path))
    assert not any(t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)
                   for t in model.graph.initializer)
    _, data = val_images
    images = torch.stack([data.val[i][0] for i in range(9)])  # a batch size the export never saw
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})[0]
    expected = load_trained(trained).probabilities(images)["ensemble"].numpy()
    assert got.shape == (9, len(summary(trained)["class_names"]))
    assert np.abs(got - expected).max() <= 1e-4


def test_an_aer_head_exports_through_its_torch_exact_equivalent(trained: Path, tmp_path: Path) -> None:
    from qsight.serving.loader import load_trained

    copy = tmp_path / "aer-run"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("wandb", "visualizations", "exports"))
    spec = (copy / "spec.toml").read_text()
    exact = 'type = "torch-exact"\ndtype = "float64"\n'
    assert exact in spec
    (copy / "spec.toml").write_text(spec.replace(exact, 'type = "aer"\nshots = 256\n'))
    assert load_spec(copy / "spec.toml").model.heads["quantum"].sampler.type == "aer"  # type: ignore[attr-defined]
    done = cli("export", str(copy), "--format", "torch-export", "--head", "quantum", "--samples", "6", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["format"] == "torch-export" and result["output"] == "quantum" and result["max_abs_diff"] <= 1e-4
    assert any("'aer'" in note and "torch-exact" in note for note in result["notes"])
    program = torch.export.load(result["file"]).module()
    images = torch.randn(3, 3, 32, 32)
    expected = load_trained(trained).probabilities(images)["quantum"]
    assert torch.allclose(program(images), expected, atol=1e-5)


def test_the_run_logged_an_mlflow_model_that_loads_and_predicts(trained: Path, val_images: tuple[Path, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    from qsight.serving.loader import load_trained

    uri = mlflow_uri(trained)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("serve")
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert len(models) == 1 and models[0].source_run_id
    assert client.get_run(models[0].source_run_id).data.tags["qsight.run_id"] == trained.name
    versions = client.search_model_versions(f"name='{REGISTERED}'")
    assert [v.source for v in versions] == [models[0].model_uri]
    loaded = mlflow.pyfunc.load_model(models[0].model_uri)
    assert loaded.metadata.get_input_schema().inputs[0].shape == (-1, 3, 32, 32)
    _, data = val_images
    images = torch.stack([data.val[i][0] for i in range(4)])
    frame = loaded.predict(images.numpy())
    names = summary(trained)["class_names"]
    assert list(frame.columns) == ["grade", *(f"p_{c}" for c in names)]
    expected = load_trained(trained).probabilities(images)["ensemble"].numpy()
    assert np.abs(frame[[f"p_{c}" for c in names]].to_numpy() - expected).max() < 1e-6
    registered = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/1")
    assert registered.predict(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 1 + len(names))


def test_the_run_logged_a_wandb_model_artifact_with_aliases_and_final_metrics(trained: Path) -> None:
    from tests.helpers import read_finished

    [log] = list((trained / "wandb").glob("offline-run-*/run-*.wandb"))
    arts = [r.artifact for r in read_finished(log) if r.HasField("artifact") and r.artifact.name.endswith("-model")]
    assert len(arts) == 1
    art = arts[0]
    assert art.type == "model" and set(art.aliases) >= {"best", "latest"}
    metadata = json.loads(art.metadata)
    final = summary(trained)["final"]
    assert metadata["final"]["val/ensemble/qwk"] == pytest.approx(final["val/ensemble/qwk"])
    assert metadata["class_names"] == summary(trained)["class_names"]
    assert {e.path for e in art.manifest.contents} == {"checkpoints/last.pt", "spec.toml"}


class _Payload:
    """Runs code when unpickled (what a weights-only load must refuse)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_are_loaded_weights_only(trained: Path, tmp_path: Path) -> None:
    from qsight.serving.loader import load_trained

    copy = tmp_path / "tampered"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("wandb", "visualizations", "exports"))
    state = torch.load(copy / "checkpoints" / "last.pt", weights_only=True)
    marker = tmp_path / "pwned"
    state["evil"] = _Payload(marker)
    with (copy / "checkpoints" / "last.pt").open("wb") as fh:
        torch.save(state, fh)
    with pytest.raises(BadInputError, match="cannot read checkpoint"):
        load_trained(copy)
    assert not marker.exists()
    assert load_trained(copy, checkpoint="best").checkpoint.path.name == "best.pt"
    torch.load(copy / "checkpoints" / "last.pt", weights_only=False)  # what a pickle load would have done
    assert marker.exists()
