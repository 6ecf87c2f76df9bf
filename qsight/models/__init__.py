"""qsight.models: backbones, classical heads, neck, combiner and the HybridModel.

Importing this package registers the built-in backbones and heads without
importing torch or timm: factories import their implementation when called,
and the heavy public names load on first access (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsight.components import BACKBONES, HEADS
from qsight.lazy import lazy_getattr
from qsight.models.output import ModelOutput
from qsight.models.params import (
    CombinerSpec,
    HeadParams,
    LinearHeadParams,
    MlpHeadParams,
    NeckSpec,
    TimmBackboneParams,
    TinyCnnParams,
)

if TYPE_CHECKING:
    from torch import nn

    from qsight.models.backbones import Backbone, TinyCnn
    from qsight.models.combiner import Combiner, GatedCombiner, MeanCombiner
    from qsight.models.heads import LinearHead, MlpHead
    from qsight.models.hybrid import HybridModel, build_model
    from qsight.models.neck import Neck
    from qsight.models.normalization import backbone_normalization
    from qsight.models.stages import StageLike

_LAZY = {
    "Backbone": "qsight.models.backbones",
    "TinyCnn": "qsight.models.backbones",
    "Combiner": "qsight.models.combiner",
    "GatedCombiner": "qsight.models.combiner",
    "MeanCombiner": "qsight.models.combiner",
    "LinearHead": "qsight.models.heads",
    "MlpHead": "qsight.models.heads",
    "HybridModel": "qsight.models.hybrid",
    "build_model": "qsight.models.hybrid",
    "Neck": "qsight.models.neck",
    "backbone_normalization": "qsight.models.normalization",
    "StageLike": "qsight.models.stages",
}

__all__ = [
    "Backbone",
    "Combiner",
    "CombinerSpec",
    "GatedCombiner",
    "HeadParams",
    "HybridModel",
    "LinearHead",
    "LinearHeadParams",
    "MeanCombiner",
    "MlpHead",
    "MlpHeadParams",
    "ModelOutput",
    "Neck",
    "NeckSpec",
    "StageLike",
    "TimmBackboneParams",
    "TinyCnn",
    "TinyCnnParams",
    "backbone_normalization",
    "build_model",
]


__getattr__ = lazy_getattr(__name__, _LAZY)


@BACKBONES.register("timm", params=TimmBackboneParams, summary="any timm model as a feature extractor")
def _timm_backbone(params: TimmBackboneParams) -> nn.Module:
    from qsight.models.backbones import timm_backbone

    return timm_backbone(params)


@BACKBONES.register("tiny-cnn", params=TinyCnnParams, summary="a fast small CNN for CPU smoke runs")
def _tiny_cnn_backbone(params: TinyCnnParams) -> nn.Module:
    from qsight.models.backbones import tiny_cnn_backbone

    return tiny_cnn_backbone(params)


@HEADS.register("linear", params=LinearHeadParams, summary="dropout and a linear layer to class logits")
def _linear_head(params: LinearHeadParams, in_dim: int, num_classes: int) -> nn.Module:
    from qsight.models.heads import linear_head

    return linear_head(params, in_dim, num_classes)


@HEADS.register("mlp", params=MlpHeadParams, summary="a small MLP to class logits")
def _mlp_head(params: MlpHeadParams, in_dim: int, num_classes: int) -> nn.Module:
    from qsight.models.heads import mlp_head

    return mlp_head(params, in_dim, num_classes)
