"""Parameters of the model components (pure pydantic: importing this is cheap)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from registry import Off, Params

HeadInput = Literal["backbone", "neck"]


class HeadParams(Params):
    """Base of every head's parameters: which features the head reads."""

    input: HeadInput = Field("backbone", description="'backbone' (full features) or 'neck' (compressed)")


class LinearHeadParams(HeadParams):
    """A linear layer from features to class logits."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the layer")


class MlpHeadParams(HeadParams):
    """A small MLP from features to class logits."""

    hidden: int = Field(64, ge=1, le=8192, description="hidden width (chosen at build time with match_params)")
    layers: int = Field(1, ge=1, le=8, description="hidden layers")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout after each hidden layer")
    match_params: str | None = Field(
        None,
        min_length=1,
        description="another head's name: choose hidden so this head has its parameter count (within ±10 %)",
    )


class TimmBackboneParams(Params):
    """Any timm model name, used as a feature extractor (classifier removed)."""

    name: str = Field("resnet18", min_length=1, description="timm model name, e.g. resnet18, efficientnet_b0")
    pretrained: bool = Field(False, description="load timm's pretrained weights (must be reachable)")
    checkpoint: str | None = Field(None, description="local state_dict file loaded into the backbone")
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0, description="timm drop_rate")
    kwargs: dict[str, int | float | str | bool] = Field(
        default_factory=dict, description="extra keyword arguments for timm.create_model"
    )


class TinyCnnParams(Params):
    """A fast small CNN for CPU smoke runs."""

    width: int = Field(16, ge=4, le=256, description="channels of the first block (doubling per block)")
    depth: int = Field(3, ge=1, le=6, description="conv blocks")
    checkpoint: str | None = Field(None, description="local weights file (state_dict) loaded into the CNN")


class NeckSpec(Params):
    """Compression of backbone features into a small latent (what the quantum head reads)."""

    enabled: bool = Field(True, description="false: no neck (as neck = false)")
    dim: int = Field(16, ge=1, le=4096, description="latent width")
    hidden: Annotated[int | None, Off("off", 0)] = Field(
        None, ge=1, le=8192, description='hidden layer width; "off" or 0 (default): none'
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class CombinerSpec(Params):
    """How active heads are combined into the ensemble prediction."""

    type: Literal["mean", "gated"] = Field("gated", description="mean of probabilities or learned gates")
