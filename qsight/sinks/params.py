"""Parameters of the built-in sinks (pure pydantic: importing this is cheap)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from registry import Params


class SinkParams(Params):
    """Base of every sink's parameters."""

    strict: bool = Field(False, description="a failure of this sink fails the run (else it is disabled)")


class LocalParams(SinkParams):
    """The run folder's bookkeeping files (always on)."""

    flush_every: int = Field(1, ge=1, le=10_000, description="metrics.jsonl lines between flushes")


class ConsoleParams(SinkParams):
    """A compact table of validation metrics per epoch on stderr (rich)."""

    columns: tuple[str, ...] = Field(
        ("train_loss", "accuracy", "balanced_accuracy", "macro_f1", "qwk", "referable_auc", "ece"),
        description="metric names shown as columns when present (all metrics when none are)",
    )
    max_columns: int = Field(8, ge=1, le=32, description="most columns shown")


class WandbParams(SinkParams):
    """Weights & Biases; offline unless mode='online' and an API key is present."""

    mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description="'online' needs WANDB_API_KEY; otherwise the run stays offline"
    )
    project: str | None = Field(None, description="project name; the spec's name when unset")
    entity: str | None = Field(None, description="team or user (online only)")
    tags: tuple[str, ...] = Field((), description="run tags")
    log_artifacts: bool = Field(True, description="log files such as checkpoints as W&B artifacts")
    init_timeout: float = Field(60.0, gt=0, le=600, description="seconds allowed for wandb.init")


class MlflowParams(SinkParams):
    """MLflow tracking through MlflowClient (sqlite store under the reports root by default)."""

    tracking_uri: str | None = Field(
        None, description="tracking URI; else MLFLOW_TRACKING_URI; else sqlite:///<reports root>/mlflow.db"
    )
    experiment: str | None = Field(None, description="experiment name; the spec's name when unset")
    timeout: int = Field(10, ge=1, le=600, description="seconds per HTTP request to a tracking server")
    retries: int = Field(0, ge=0, le=10, description="HTTP retries per request")
    log_artifacts: bool = Field(True, description="upload files such as checkpoints")
    tags: dict[str, str] = Field(default_factory=dict, description="extra run tags")
    log_model: bool = Field(True, description="log the model a completed run ends with as an MLflow Model (pyfunc)")
    # spelled `register` in specs; a field of that name would shadow pydantic's ABCMeta.register
    register_as: str | None = Field(None, alias="register",
                                    description="also register that model under this name in the Model Registry")

    model_config = ConfigDict(validate_by_alias=True, validate_by_name=False, serialize_by_alias=True)
