"""Experiment specs: the typed, validated form of one TOML file."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qsight.components import BACKBONES, DATASETS, HEADS, SINKS, load_components, registered_count
from qsight.errors import BadInputError
from qsight.metric_names import (
    DEFAULT_MONITOR,
    DEFAULT_MONITOR_MODE,
    ENSEMBLE,
    METRIC_PATTERN,
    NAME_PATTERN,
    monitor_head,
)
from qsight.models.params import CombinerSpec, NeckSpec
from qsight.runs.layout import TEST as TEST_FOLDER
from registry import ComponentRef, Off, OffJsonSchema, Params, unknown_message

_NAME = NAME_PATTERN


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnnealConfig(_Strict):
    """Quantum head temperature/noise schedule across a stage (linear)."""

    start_temp: float = Field(1.0, gt=0)
    end_temp: float = Field(1.0, gt=0)
    start_noise: float = Field(0.0, ge=0)
    end_noise: float = Field(0.0, ge=0)


class StageConfig(_Strict):
    """One training stage: which heads are active and which modules train."""

    name: str = Field(pattern=_NAME)
    epochs: int = Field(ge=1, le=10_000)
    heads: tuple[str, ...] = Field(min_length=1, description="active heads (loss and ensemble)")
    train: tuple[str, ...] = Field(
        min_length=1, description="trainable modules: backbone, neck, combiner, heads.<name>"
    )
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    grad_accumulation: int = Field(1, ge=1, le=1024)
    grad_clip: Annotated[float | None, Off("off", 0)] = Field(
        1.0, gt=0, description='max gradient norm; "off" or 0: no clipping'
    )
    grad_clip_scope: Literal["stage", "module"] = Field(
        "stage",
        description="clip one norm over all trainable parameters, or each module in train on its own "
        "(heads trained side by side then train as each would alone)",
    )
    patience: Annotated[int | None, Off("off")] = Field(
        None, ge=1, description='early stopping: epochs without improvement; "off" (default): none'
    )
    monitor: str = Field(DEFAULT_MONITOR, pattern=METRIC_PATTERN)
    monitor_mode: Literal["max", "min"] = DEFAULT_MONITOR_MODE
    restore_best: bool = Field(False, description="end the stage with the weights of its best epoch (by monitor)")
    loss_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    data_parallel: Literal["auto", "never", "force"] = "auto"
    cache_features: bool | Literal["auto"] = "auto"
    anneal: Annotated[AnnealConfig | None, Off(False)] = Field(
        None, description="quantum head temperature/noise schedule; false (default): none"
    )


SinkRef = Annotated[Params, ComponentRef(SINKS)]
HeadRef = Annotated[Params, ComponentRef(HEADS)]


class ModelSpec(_Strict):
    """Backbone, optional neck, named heads and the ensemble combiner."""

    backbone: Annotated[Params, ComponentRef(BACKBONES, default="timm")] = Field(
        default_factory=lambda: {"type": "timm"}, validate_default=True
    )
    neck: Annotated[NeckSpec | None, Off(False)] = Field(
        default_factory=NeckSpec, description="feature compression; neck = false or [model.neck] enabled = false: none"
    )
    heads: dict[str, HeadRef] = Field(min_length=1)
    combiner: CombinerSpec = Field(default_factory=CombinerSpec)

    @field_validator("neck", mode="after")
    @classmethod
    def _neck_enabled(cls, neck: NeckSpec | None) -> NeckSpec | None:
        return neck if neck is not None and neck.enabled else None

    @model_validator(mode="after")
    def _head_names(self) -> ModelSpec:
        for name in self.heads:
            if not re.match(_NAME, name) or name == ENSEMBLE:
                raise ValueError(f"head name {name!r} must match {_NAME} and not be {ENSEMBLE!r}")
        return self


class TrainSpec(_Strict):
    """Loop settings shared by every stage."""

    batch_size: int = Field(32, ge=1, le=65_536)
    eval_batch_size: int | None = Field(None, ge=1, le=65_536)
    num_workers: int = Field(0, ge=0, le=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    deterministic: bool = Field(True, description="deterministic algorithms (exact resume)")
    class_weighted_loss: bool = Field(False, description="weight the loss by inverse class frequency")
    sync_batchnorm: bool = Field(
        True, description="under torchrun: BatchNorm statistics over the global batch (all processes)"
    )
    log_every: int = Field(10, ge=1, description="training batches between metric lines")
    limit_batches: Annotated[int | None, Off("off")] = Field(
        None, ge=1, description='cap batches per epoch (quick runs); "off" (default): no cap'
    )


class ExplainSpec(_Strict):
    """Grad-CAM on class-diverse validation samples, scored by the pointing game on lesion masks."""

    enabled: bool = True
    samples: int = Field(
        10, ge=1, le=256, description="validation samples drawn in the collage (each class before repeats)"
    )
    target_layer: str | None = Field(
        None, description="module path in the backbone; automatic when unset (see min_map_size)"
    )
    every: int = Field(1, ge=1, description="explain every N epochs (the last epoch of a stage always)")
    method: Literal["gradcam", "layercam", "hirescam"] = Field(
        "layercam", description="map: gradcam (channel-averaged gradients), layercam or hirescam (per position)"
    )
    min_map_size: int = Field(
        7, ge=1, le=64, description="automatic target layer: the deepest whose map is at least this many cells a side"
    )
    pointing_samples: int = Field(
        40, ge=0, le=4096,
        description="lesion-bearing validation samples scored by the pointing game when explaining (0: none)",
    )
    pointing_tolerance: float = Field(
        0.067, ge=0.0, le=0.5,
        description="pointing-game hit radius around a lesion, as a fraction of the image side "
        "(0.067: 15 px at 224 px, Zhang et al. 2016; 0: the peak pixel itself)",
    )


class OutputSpec(_Strict):
    """Where runs go."""

    root: str = Field("reports", min_length=1, description="reports root; runs go to <root>/runs/<name>/<id>")


class ExperimentSpec(_Strict):
    """One experiment file, validated."""

    name: str = Field(pattern=_NAME, description="MLflow experiment / WandB project name")
    description: str = ""
    seed: int = Field(42, ge=0, le=2**32 - 1)
    data: Annotated[Params, ComponentRef(DATASETS, default="synthetic-fundus")] = Field(
        default_factory=lambda: {"type": "synthetic-fundus"}, validate_default=True
    )
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    explain: ExplainSpec = Field(default_factory=ExplainSpec)
    sinks: dict[str, SinkRef] = Field(default_factory=dict)
    output: OutputSpec = Field(default_factory=OutputSpec)
    stages: tuple[StageConfig, ...] = Field(min_length=1)


class SpecError(BadInputError):
    """An invalid spec; `issues` holds (key path, message) pairs."""

    def __init__(self, source: str, issues: Sequence[tuple[str, str]]) -> None:
        self.source, self.issues = source, list(issues)
        lines = [f"{source}: invalid spec"] + [f"  {k or '<top level>'}: {m}" for k, m in self.issues]
        super().__init__("\n".join(lines))


_built_at = -1


def ensure_ready() -> None:
    """Load components and plugins; rebuild the spec models when the registries changed."""
    global _built_at
    load_components()
    if _built_at != registered_count():
        for model in (ModelSpec, ExperimentSpec):
            model.model_rebuild(force=True)
        _built_at = registered_count()


def validate_spec(raw: Mapping[str, Any], source: str = "<spec>") -> ExperimentSpec:
    """Validate plain data as an experiment spec, with cross-references checked."""
    ensure_ready()
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(source, [(_loc_path(e["loc"], raw), _message(e)) for e in exc.errors()]) from None
    issues = check_references(spec)
    if issues:
        raise SpecError(source, issues)
    return spec


def check_references(spec: ExperimentSpec) -> list[tuple[str, str]]:
    """Cross-checks pydantic cannot express: names a stage uses must exist."""
    heads = list(spec.model.heads)
    modules = ["backbone", "combiner"] + (["neck"] if spec.model.neck else []) + [f"heads.{h}" for h in heads]
    issues: list[tuple[str, str]] = []
    for hname, head in spec.model.heads.items():
        if getattr(head, "input", "backbone") == "neck" and spec.model.neck is None:
            issues.append((f"model.heads.{hname}.input", "reads 'neck' but the neck is off"))
        issues += _match_issues(spec, hname, getattr(head, "match_params", None))
    seen: set[str] = set()
    for i, stage in enumerate(spec.stages):
        key = f"stages.{i}"
        if stage.name in seen:
            issues.append((f"{key}.name", f"duplicate stage name {stage.name!r}"))
        if stage.name == TEST_FOLDER:
            issues.append((f"{key}.name", f"{TEST_FOLDER!r} is reserved (the test split's results)"))
        seen.add(stage.name)
        for h in stage.heads:
            if h not in heads:
                issues.append((f"{key}.heads", unknown_message("head", h, heads)))
        for m in stage.train:
            if m not in modules:
                issues.append((f"{key}.train", unknown_message("module", m, modules)))
        for h in stage.loss_weights:
            if h not in stage.heads:
                issues.append((f"{key}.loss_weights.{h}", f"head {h!r} is not active in this stage"))
        upstream = [m for m in stage.train if m in ("backbone", "neck")]
        if stage.cache_features is True and upstream:
            issues.append((f"{key}.cache_features", f"features cannot be cached while {upstream} train"))
        watched = monitor_head(stage.monitor)
        if watched != ENSEMBLE and watched not in stage.heads:
            issues.append((f"{key}.monitor", f"head {watched!r} is not active in this stage"))
    return issues


def _match_issues(spec: ExperimentSpec, head: str, target: str | None) -> list[tuple[str, str]]:
    """A head sized like another (``match_params``) must name a head that is not sized itself."""
    if target is None:
        return []
    key = f"model.heads.{head}.match_params"
    heads = spec.model.heads
    if target == head:
        return [(key, "a head cannot match its own parameter count")]
    if target not in heads:
        return [(key, unknown_message("head", target, list(heads)))]
    if getattr(heads[target], "match_params", None) is not None:
        return [(key, f"head {target!r} is itself sized by match_params")]
    return []


def _loc_path(loc: Sequence[int | str], raw: Any) -> str:
    """Dotted key path of an error, without the tags pydantic adds for tagged unions."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(node, Mapping) and item not in node and node.get("type") == item:
            continue  # the discriminator value pydantic inserts
        if isinstance(node, Mapping) and not isinstance(item, str) and item not in node:
            continue
        parts.append(str(item))
        if isinstance(node, Mapping):
            node = node.get(item)
        elif isinstance(node, list | tuple) and isinstance(item, int) and 0 <= item < len(node):
            node = node[item]
        else:
            node = None
    return ".".join(parts)


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    if err.get("type") not in ("missing", "unknown_component", "missing_component_type") and "input" in err:
        value = err["input"]
        if not isinstance(value, dict | list) or len(repr(value)) < 60:
            msg += f" (got {value!r})"
    if err.get("type") == "extra_forbidden":
        msg = "unknown key" + msg[len("Extra inputs are not permitted") :]
    return msg


def spec_schema() -> dict[str, Any]:
    """JSON schema of experiment specs, with every registered component."""
    ensure_ready()
    return ExperimentSpec.model_json_schema(schema_generator=OffJsonSchema)
