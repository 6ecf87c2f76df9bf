"""Sinks: where a run's metrics and artifacts go (local folder, console, WandB, MLflow).

Importing this package is cheap: implementations (rich, wandb, mlflow) load in the factories.
"""

from __future__ import annotations

from qsight.components import SINKS
from qsight.sinks.base import BaseSink, RunInfo, Sink
from qsight.sinks.fanout import SinkSet, build_sinks
from qsight.sinks.params import ConsoleParams, LocalParams, MlflowParams, SinkParams, WandbParams

__all__ = [
    "BaseSink",
    "ConsoleParams",
    "LocalParams",
    "MlflowParams",
    "RunInfo",
    "Sink",
    "SinkParams",
    "SinkSet",
    "WandbParams",
    "build_sinks",
]


@SINKS.register("local", params=LocalParams, summary="run folder: spec, environment, metrics.jsonl, summary")
def local_sink(p: LocalParams) -> Sink:
    """The run folder's bookkeeping files (always on)."""
    from qsight.sinks.local import LocalSink

    return LocalSink(strict=p.strict, flush_every=p.flush_every)


@SINKS.register("console", params=ConsoleParams, summary="rich table of validation metrics per epoch")
def console_sink(p: ConsoleParams) -> Sink:
    """Validation metrics on stderr."""
    from qsight.sinks.console import ConsoleSink

    return ConsoleSink(strict=p.strict, columns=p.columns, max_columns=p.max_columns)


@SINKS.register("wandb", params=WandbParams, summary="Weights & Biases, offline unless a key and mode=online")
def wandb_sink(p: WandbParams) -> Sink:
    """Weights & Biases."""
    from qsight.sinks.wandb_sink import WandbSink

    return WandbSink(p)


@SINKS.register("mlflow", params=MlflowParams, summary="MLflow via MlflowClient (sqlite store by default)")
def mlflow_sink(p: MlflowParams) -> Sink:
    """MLflow tracking."""
    from qsight.sinks.mlflow_sink import MlflowSink

    return MlflowSink(p)
