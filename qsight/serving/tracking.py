"""The MLflow run a qsight run logged to, found again afterwards, and re-evaluations logged into it."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qsight.config.spec import ExperimentSpec
from qsight.serving.loader import TrainedModel
from qsight.sinks.mlflow_store import tracking_uri
from qsight.sinks.params import MlflowParams

log = logging.getLogger("qsight.serving")


def mlflow_params(spec: ExperimentSpec) -> MlflowParams | None:
    """The spec's MLflow sink parameters, or None when it logs to no MLflow."""
    return next((p for p in spec.sinks.values() if isinstance(p, MlflowParams)), None)


def store_uri(params: MlflowParams, spec: ExperimentSpec, run_dir: Path) -> str | None:
    """The tracking URI the run used; for the default sqlite store, one that exists (the reports root of
    the spec, else the one the run folder sits in), never a new empty one."""
    for root in (Path(spec.output.root), run_dir.resolve().parents[2] if len(run_dir.resolve().parents) > 2 else None):
        if root is None:
            continue
        uri = tracking_uri(params.tracking_uri, root)
        if not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file():
            return uri
    return None


def find_run(client: Any, spec: ExperimentSpec, params: MlflowParams, run_dir: Path) -> str | None:
    """The MLflow run id tagged with this run folder's id (and folder, where several share the id)."""
    experiment = client.get_experiment_by_name(params.experiment or spec.name)
    if experiment is None:
        return None
    found = client.search_runs([experiment.experiment_id], f"tags.`qsight.run_id` = '{run_dir.name}'", max_results=50)
    here = str(run_dir.resolve())
    same = [r for r in found if str(Path(r.data.tags.get("qsight.run_dir", "")).resolve()) == here]
    chosen = same or found
    return str(chosen[0].info.run_id) if chosen else None


def log_evaluation(trained: TrainedModel, evaluation_id: str, metrics: Mapping[str, float], folder: Path) -> str | None:
    """Metrics as ``evaluations/<id>/<split>/<head>/<metric>`` and the folder's files under
    ``evaluations/<id>/`` in the run's MLflow run; returns its id (None when the run has none)."""
    params = mlflow_params(trained.spec)
    uri = None if params is None else store_uri(params, trained.spec, trained.run_dir)
    if params is None or uri is None:
        log.info("%s: no MLflow store of the run found; the evaluation stays in the run folder", trained.run_dir)
        return None
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=uri)
    run_id = find_run(client, trained.spec, params, trained.run_dir)
    if run_id is None:
        log.warning("%s: no MLflow run tagged with this run in %s; the evaluation is not logged there",
                    trained.run_dir, uri)
        return None
    now = int(time.time() * 1000)
    prefix = f"evaluations/{evaluation_id}"
    items = [Metric(f"{prefix}/{k}", float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)]
    for start in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[start : start + 1000])
    client.log_artifacts(run_id, str(folder), prefix)
    log.info("evaluation %s logged to MLflow run %s (%s)", evaluation_id, run_id, uri)
    return run_id
