"""MLflow sink: one MLflow run per qsight run, through `MlflowClient` and an explicit run id."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qsight.sinks.base import BaseSink, RunInfo
from qsight.sinks.params import MlflowParams

TERMINAL = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
MAX_KEY, MAX_VALUE, PARAMS_PER_BATCH, METRICS_PER_BATCH = 250, 6000, 100, 1000


def tracking_uri(param: str | None, reports_root: Path) -> str:
    """The sink's `tracking_uri`, else MLFLOW_TRACKING_URI, else the sqlite store under the reports root."""
    if param:
        return param
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{reports_root.resolve() / 'mlflow.db'}"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys → string values; lists of tables are indexed, other lists kept as JSON."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{i}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(list(value), default=str)
        else:
            out[name] = str(value)
    return {_key(k): v[:MAX_VALUE] for k, v in out.items()}


def _key(name: str) -> str:
    """A key MLflow accepts: allowed characters only, at most 250 of them."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)[:MAX_KEY]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class MlflowSink(BaseSink):
    """Params from the resolved spec, metrics with steps, images, tables, artifacts, a final status."""

    def __init__(self, params: MlflowParams, name: str = "mlflow") -> None:
        super().__init__(name, params.strict)
        self.params = params
        self.client: Any = None
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self.run_dir: Path | None = None
        self._finished = False

    @contextmanager
    def _http(self) -> Iterator[None]:
        """Short timeouts and no retries for the calls inside (a dead server fails fast)."""
        wanted = {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.params.retries),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.params.timeout),
        }
        saved = {k: os.environ.get(k) for k in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("mlflow sink not started")
        return self.run_id

    def start(self, run: RunInfo) -> None:
        """Experiment (created when new), run named after the run id, params and the spec.

        A run whose qsight run id is already in the experiment (``--resume``) is reopened.
        """
        import tomli_w
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri(self.params.tracking_uri, run.reports_root)
        self.run_dir = run.run_dir
        artifacts: str | None = None
        if self.tracking_uri.startswith("sqlite:") and not self.params.tracking_uri:
            run.reports_root.mkdir(parents=True, exist_ok=True)
            artifacts = (run.reports_root.resolve() / "mlartifacts").as_uri()
        with self._http():
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            exp_id = self._experiment(self.params.experiment or run.experiment, artifacts)
            self.run_id = self._existing_run(exp_id, run.run_id)
            if self.run_id is not None:  # a resumed qsight run continues its MLflow run
                self.client.update_run(self.run_id, status="RUNNING")
                return
            tags = {"qsight.run_id": run.run_id, "qsight.run_dir": str(run.run_dir), **self.params.tags}
            self.run_id = self.client.create_run(exp_id, run_name=run.run_id, tags=tags).info.run_id
            self._log_params(flatten(run.spec))
            self.client.log_text(self.run_id, tomli_w.dumps(run.spec), "spec.toml")

    def _existing_run(self, experiment_id: str, qsight_run_id: str) -> str | None:
        found = self.client.search_runs([experiment_id], f"tags.`qsight.run_id` = '{qsight_run_id}'", max_results=1)
        return str(found[0].info.run_id) if found else None

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=artifact_location))
        except Exception:  # created meanwhile by another process
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for chunk in _chunks(items, PARAMS_PER_BATCH):
            self.client.log_batch(self._run(), params=chunk)

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None:
        """Numeric metrics at `step` in batches (non-numeric values skipped)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(_key(k), float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v))
        ]
        with self._http():
            for chunk in _chunks(items, METRICS_PER_BATCH):
                self.client.log_batch(self._run(), metrics=chunk)

    def log_image(self, key: str, path: Path, step: int) -> None:
        """A PNG as a stepped MLflow image (`images/` in the run's artifacts)."""
        from PIL import Image

        with Image.open(path) as img, self._http():
            self.client.log_image(self._run(), img.convert("RGB"), key=_key(key), step=step)

    def log_table(self, key: str, path: Path, step: int) -> None:
        """A CSV as an MLflow table artifact `tables/<key>_step<step>.json`."""
        import pandas as pd

        frame = pd.read_csv(path)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
        with self._http():
            self.client.log_table(self._run(), data=frame, artifact_file=f"tables/{name}_step{step}.json")

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file (or folder) uploaded under `artifact_path`."""
        if not self.params.log_artifacts:
            return
        path = Path(path)
        with self._http():
            if path.is_dir():
                self.client.log_artifacts(self._run(), str(path), artifact_path)
            else:
                self.client.log_artifact(self._run(), str(path), artifact_path)

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        """The summary as `summary.json`, the MLflow Model of a completed run, then the terminal status
        (FINISHED, FAILED, KILLED)."""
        if self.run_id is None or self.client is None or self._finished:
            return
        self._finished = True
        from qsight.sinks.local import json_safe

        with self._http():
            try:
                self.client.log_dict(self.run_id, json_safe({"status": status, **summary}), "summary.json")
                if status == "completed" and self.params.log_model and self.run_dir and self.tracking_uri:
                    from qsight.sinks.run_model import log_mlflow_model

                    log_mlflow_model(self.tracking_uri, self.run_id, self.run_dir, summary, self.params.register_as)
            finally:
                self.client.set_terminated(self.run_id, TERMINAL.get(status, "FAILED"))
