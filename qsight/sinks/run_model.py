"""The model a completed run ends with, logged as an MLflow Model (pyfunc) and as a W&B model artifact.

Both hold the run's ``spec.toml`` and its ``last.pt`` checkpoint, the model the run ended with, in the
weights-only format of `qsight.training.checkpoints`. The MLflow Model is a model from
code: MLflow copies `qsight/serving/pyfunc.py` into it and runs it on loading, so this module only
names that file (the sinks do not import the serving package, which imports them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qsight.runs.layout import RunLayout
from qsight.sinks.local import json_safe

log = logging.getLogger("qsight.sinks")

#: The code file of the MLflow Model (see the module docstring).
PYFUNC_CODE = Path(__file__).resolve().parents[1] / "serving" / "pyfunc.py"
MODEL_NAME = "model"
ALIASES = ("best", "latest")


def model_checkpoint(run_dir: Path) -> Path | None:
    """``checkpoints/last.pt``, the model the run ended with; None when the run wrote none (no model to log)."""
    path = RunLayout(run_dir).checkpoints / "last.pt"
    return path if path.is_file() else None


def stage_run_folder(run_dir: Path, summary: Mapping[str, Any], into: Path) -> Path:
    """A minimal run folder under `into` (spec, summary, the checkpoint as ``last.pt``): the model's artifact."""
    checkpoint = model_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to log as the run's model")
    folder = into / "run"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copyfile(RunLayout(run_dir).spec, folder / "spec.toml")
    (folder / "summary.json").write_text(json.dumps(json_safe(dict(summary)), indent=2), encoding="utf-8")
    try:
        os.link(checkpoint, folder / "checkpoints" / "last.pt")
    except OSError:
        shutil.copyfile(checkpoint, folder / "checkpoints" / "last.pt")
    return folder


def signature(image_size: int, class_names: list[str]) -> Any:
    """Input: float32 images (N, 3, S, S), normalised; output: ``grade`` and ``p_<class>`` per image."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    outputs: list[ColSpec | TensorSpec] = [ColSpec("long", "grade")]
    outputs += [ColSpec("double", f"p_{c}") for c in class_names]
    return ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, 3, image_size, image_size))]),
                          Schema(outputs))


@contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """MLflow's fluent API on `uri` for a while (it logs models); the environment restored after."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: unset again
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before


def log_mlflow_model(
    tracking_uri: str, run_id: str, run_dir: Path, summary: Mapping[str, Any], register: str | None = None
) -> str:
    """Log the run's model into MLflow run `run_id` (registered as `register` when given); returns its URI."""
    import mlflow
    import numpy as np

    from qsight import __version__

    spec = tomllib.loads(RunLayout(run_dir).spec.read_text(encoding="utf-8"))
    size = int(spec["data"]["image_size"])
    names = [str(c) for c in summary["class_names"]]
    with tempfile.TemporaryDirectory(prefix="qsight-model-") as tmp, _tracking(tracking_uri):
        folder = stage_run_folder(run_dir, summary, Path(tmp))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME, python_model=str(PYFUNC_CODE), artifacts={"run": str(folder)},
                signature=signature(size, names), input_example=np.zeros((1, 3, size, size), dtype=np.float32),
                registered_model_name=register, pip_requirements=[f"qsight=={__version__}"],
                metadata={"qsight_run_id": run_dir.name},
            )
    log.info("MLflow model of %s: %s%s", run_dir.name, info.model_uri, f" (registered: {register})" if register else "")
    return str(info.model_uri)


def log_wandb_model(run: Any, name: str, run_dir: Path, summary: Mapping[str, Any]) -> None:
    """The checkpoint and spec as the W&B ``model`` artifact `name`, aliases best and latest, the run's
    final and best metrics as metadata."""
    import wandb

    checkpoint = model_checkpoint(run_dir)
    if checkpoint is None:
        log.info("%s: no checkpoint, so no W&B model artifact", run_dir)
        return
    metadata = json_safe({k: summary.get(k) for k in ("final", "best", "class_names", "status")})
    art = wandb.Artifact(name, "model", metadata=metadata)
    art.add_file(str(checkpoint), name=f"checkpoints/{checkpoint.name}", policy="immutable")
    art.add_file(str(RunLayout(run_dir).spec), name="spec.toml", policy="immutable")
    run.log_artifact(art, aliases=list(ALIASES))
