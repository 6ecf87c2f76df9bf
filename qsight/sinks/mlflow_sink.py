"""MLflow sink: one MLflow run per qsight run, through `MlflowClient` and an explicit run id."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qsight.sinks.base import BaseSink, RunInfo
from qsight.sinks.mlflow_store import open_client, tracking_uri
from qsight.sinks.params import MlflowParams

TERMINAL = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
MAX_KEY, MAX_VALUE, PARAMS_PER_BATCH, METRICS_PER_BATCH = 250, 6000, 100, 1000
MAX_TABLES_TAG = 6000  # characters of the `mlflow.loggedArtifacts` tag (MLflow stops at 8000)
TABLES_TAG = "mlflow.loggedArtifacts"
IMAGE_FILE = re.compile(r"^images/(?P<key>.+)\+step\+(?P<step>\d+)\+timestamp\+")


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


class Logged:
    """What earlier processes of a resumed run stored: the last step per metric key and per image key.

    A resumed run restarts from its last checkpoint and logs the steps after it again; a point
    at or before the last step already stored under its key is not logged twice.
    """

    def __init__(self, metrics: Mapping[str, int] | None = None, images: Mapping[str, int] | None = None) -> None:
        self.metrics = dict(metrics or {})
        self.images = dict(images or {})

    @classmethod
    def read(cls, client: Any, run_id: str) -> Logged:
        """The last stored step of each metric and stepped image of an MLflow run."""
        metrics = {
            key: max((int(m.step) for m in client.get_metric_history(run_id, key)), default=-1)
            for key in client.get_run(run_id).data.metrics
        }
        images: dict[str, int] = {}
        for info in client.list_artifacts(run_id, "images"):
            found = IMAGE_FILE.match(info.path)
            if found:
                images[found["key"]] = max(images.get(found["key"], -1), int(found["step"]))
        return cls(metrics, images)

    def new_metric(self, key: str, step: int) -> bool:
        return step > self.metrics.get(key, -1)

    def new_image(self, key: str, step: int) -> bool:
        return step > self.images.get(key.replace("/", "~"), -1)  # MLflow's file names spell '/' as '~'


class MlflowSink(BaseSink):
    """Params from the resolved spec, metrics with steps, images, tables, artifacts, a final status.

    A resumed qsight run (`RunInfo.resumed`) continues its MLflow run and skips what is already
    stored (see `Logged`). Tables are JSON artifacts; the run's `mlflow.loggedArtifacts` tag lists
    the latest table of each key only, so it stays small however many epochs the run has.
    """

    def __init__(self, params: MlflowParams, name: str = "mlflow") -> None:
        super().__init__(name, params.strict)
        self.params = params
        self.client: Any = None
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self.logged = Logged()
        self._tables: dict[str, str] = {}  # table name → its latest artifact file
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

        A resumed run reopens the MLflow run of its folder (tags ``qsight.run_id`` and
        ``qsight.run_dir``); a new run always gets a new MLflow run.
        """
        import tomli_w

        self.tracking_uri = tracking_uri(self.params.tracking_uri, run.reports_root)
        self.run_dir = run.run_dir
        artifacts: str | None = None
        if self.tracking_uri.startswith("sqlite:") and not self.params.tracking_uri:
            run.reports_root.mkdir(parents=True, exist_ok=True)
            artifacts = (run.reports_root.resolve() / "mlartifacts").as_uri()
        with self._http():
            self.client = open_client(self.tracking_uri)
            exp_id = self._experiment(self.params.experiment or run.experiment, artifacts)
            self.run_id = self._existing_run(exp_id, run) if run.resumed else None
            if self.run_id is not None:
                self._reopen(run)
                return
            tags = {
                "qsight.run_id": run.run_id,
                "qsight.run_dir": str(run.run_dir.resolve()),
                "qsight.dry_run": str(run.dry_run).lower(),
                **self.params.tags,
            }
            self.run_id = self.client.create_run(exp_id, run_name=run.run_id, tags=tags).info.run_id
            self._log_params(flatten(run.spec))
            self.client.log_text(self.run_id, tomli_w.dumps(run.spec), "spec.toml")

    def _existing_run(self, experiment_id: str, run: RunInfo) -> str | None:
        """The MLflow run of this run folder: same qsight run id and folder, else the only one with the id."""
        quote = '"' if "'" in run.run_id else "'"
        found = self.client.search_runs(
            [experiment_id], f"tags.`qsight.run_id` = {quote}{run.run_id}{quote}", max_results=100
        )
        here = run.run_dir.resolve()
        same = [r for r in found if Path(r.data.tags.get("qsight.run_dir", "/nonexistent")).resolve() == here]
        chosen = same or (found if len(found) == 1 else [])
        return str(chosen[0].info.run_id) if chosen else None

    def _reopen(self, run: RunInfo) -> None:
        """Mark the MLflow run running again; learn what it already holds."""
        run_id = self._run()
        self.client.update_run(run_id, status="RUNNING")
        if run.dry_run:
            self.client.set_tag(run_id, "qsight.dry_run", "true")
        self.logged = Logged.read(self.client, run_id)
        self._tables = _tables_from_tag(self.client.get_run(run_id).data.tags.get(TABLES_TAG))

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
        """Numeric metrics at `step` in batches (non-numeric values and points already stored skipped)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(_key(k), float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v))
        ]
        items = [m for m in items if self.logged.new_metric(m.key, step)]
        with self._http():
            for chunk in _chunks(items, METRICS_PER_BATCH):
                self.client.log_batch(self._run(), metrics=chunk)

    def log_image(self, key: str, path: Path, step: int) -> None:
        """A PNG as a stepped MLflow image (`images/` in the run's artifacts)."""
        if not self.logged.new_image(_key(key), step):
            return
        from PIL import Image

        with Image.open(path) as img, self._http():
            self.client.log_image(self._run(), img.convert("RGB"), key=_key(key), step=step)

    def log_table(self, key: str, path: Path, step: int) -> None:
        """A CSV as the JSON table artifact `tables/<key>_step<step>.json` (MLflow's 'split' layout).

        Written here rather than with `MlflowClient.log_table`, which appends to an existing file
        (a resumed epoch would double it) and lists every table ever logged in one tag.
        """
        import pandas as pd

        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
        file = f"{name}_step{step}.json"
        with tempfile.TemporaryDirectory(prefix="qsight-table-") as tmp, self._http():
            local = Path(tmp) / file
            pd.read_csv(path).to_json(local, orient="split", index=False, date_format="iso")
            self.client.log_artifact(self._run(), str(local), "tables")
            self._note_table(name, f"tables/{file}")

    def _note_table(self, name: str, artifact_file: str) -> None:
        """List the latest table of each key in `mlflow.loggedArtifacts` (MLflow's table view)."""
        self._tables.pop(name, None)
        self._tables[name] = artifact_file
        entries = [{"path": p, "type": "table"} for p in self._tables.values()]
        while len(json.dumps(entries)) > MAX_TABLES_TAG:
            entries.pop(0)
        self.client.set_tag(self._run(), TABLES_TAG, json.dumps(entries))

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
                from qsight.sinks.run_model import log_mlflow_model, model_checkpoint

                if (status == "completed" and self.params.log_model and self.run_dir and self.tracking_uri
                        and model_checkpoint(self.run_dir) is not None):
                    log_mlflow_model(self.tracking_uri, self.run_id, self.run_dir, summary, self.params.model_name)
            finally:
                self.client.set_terminated(self.run_id, TERMINAL.get(status, "FAILED"))


def _tables_from_tag(value: str | None) -> dict[str, str]:
    """Table name → artifact file, from a `mlflow.loggedArtifacts` tag written by `_note_table`."""
    try:
        entries = json.loads(value or "[]")
    except json.JSONDecodeError:  # cut short by an older version that outgrew the tag
        return {}
    out: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        path = str(entry.get("path", "")) if isinstance(entry, dict) else ""
        found = re.match(r"^tables/(.+)_step\d+\.json$", path)
        if found:
            out[found[1]] = found[0]
    return out
