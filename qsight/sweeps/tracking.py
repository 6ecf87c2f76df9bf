"""MLflow for sweeps: one parent run per sweep; trial runs become its children through their sink tags."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qsight.config.sweep import Sweep, literal

if TYPE_CHECKING:
    import optuna

PARENT_ATTR = "mlflow_parent."  # + the sink's label: the parent run id, stored in the study


def mlflow_sinks(sweep: Sweep) -> dict[str, Any]:
    """The base spec's MLflow sinks by label."""
    return {label: p for label, p in sweep.base.sinks.items() if getattr(p, "type", label) == "mlflow"}


def mlflow_overrides(sweep: Sweep, number: int, parents: dict[str, str]) -> list[str]:
    """``--set`` items tagging a trial run: sweep, trial number and (when known) ``mlflow.parentRunId``."""
    items = []
    for label, params in mlflow_sinks(sweep).items():
        tags = {**params.tags, "qsight.sweep": sweep.name, "qsight.trial": str(number)}
        if label in parents:
            tags["mlflow.parentRunId"] = parents[label]
        items.append(f"sinks.{label}.tags={literal(tags)}")
    return items


def ensure_parents(sweep: Sweep, study: optuna.Study) -> dict[str, str]:
    """The parent run of each MLflow sink, created once per sweep (its id kept in the study)."""
    found: dict[str, str] = {}
    for label, params in mlflow_sinks(sweep).items():
        run_id = study.user_attrs.get(PARENT_ATTR + label)
        if run_id is None:
            run_id = _create_parent(sweep, params)
            study.set_user_attr(PARENT_ATTR + label, run_id)
        found[label] = str(run_id)
    return found


def parents(study: optuna.Study) -> dict[str, str]:
    """Parent run ids already recorded in the study, by sink label."""
    return {k[len(PARENT_ATTR):]: str(v) for k, v in study.user_attrs.items() if k.startswith(PARENT_ATTR)}


def _client(sweep: Sweep, params: Any) -> tuple[Any, str]:
    from qsight.sinks.mlflow_store import open_client, tracking_uri

    root = Path(sweep.base.output.root)
    uri = tracking_uri(params.tracking_uri, root)
    client = open_client(uri)  # creates a new sqlite store once, under its file lock
    name = params.experiment or sweep.base.name
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return client, str(exp.experiment_id)
    artifacts = None
    if uri.startswith("sqlite:") and not params.tracking_uri:
        root.mkdir(parents=True, exist_ok=True)
        artifacts = (root.resolve() / "mlartifacts").as_uri()
    try:
        return client, str(client.create_experiment(name, artifact_location=artifacts))
    except Exception:  # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return client, str(exp.experiment_id)


def _create_parent(sweep: Sweep, params: Any) -> str:
    client, exp_id = _client(sweep, params)
    tags = {**params.tags, "qsight.sweep": sweep.name, "qsight.sweep_parent": "true"}
    run = client.create_run(exp_id, run_name=f"sweep {sweep.name}", tags=tags)
    client.log_dict(run.info.run_id, sweep.spec.model_dump(mode="json", by_alias=True), "sweep.json")
    return str(run.info.run_id)


def finish_parents(sweep: Sweep, study: optuna.Study, summary: dict[str, Any]) -> None:
    """Close the parent runs with the sweep's summary (FINISHED; FAILED when a trial failed)."""
    ids = parents(study)
    for label, params in mlflow_sinks(sweep).items():
        if label not in ids:
            continue
        client, _ = _client(sweep, params)
        client.log_dict(ids[label], summary, "sweep_summary.json")
        failed = summary.get("counts", {}).get("failed", 0)
        client.set_terminated(ids[label], "FAILED" if failed else "FINISHED")
