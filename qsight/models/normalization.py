"""The input normalisation a backbone expects, known from its params alone (no weights built).

The dataset is built before the model, so its transforms take the mean and
std from here: a timm model's own pretrained data config (``mean``/``std``
of ``timm.get_pretrained_cfg``, what ``timm.data.resolve_model_data_config``
reports for the built model; many ViTs use 0.5/0.5), ImageNet's statistics
for the tiny CNN and for an unknown timm name (its build then fails). A
plugin backbone chooses by giving its params a ``normalization()`` method
returning ``(mean, std)``; without one it gets ImageNet's.
"""

from __future__ import annotations

import logging
from typing import Any

from qsight.data.base import IMAGENET_MEAN, IMAGENET_STD, Triple
from qsight.models.params import TimmBackboneParams

log = logging.getLogger("qsight.models")


def backbone_normalization(params: Any) -> tuple[Triple, Triple]:
    """``(mean, std)`` per RGB channel for the backbone ``params`` describe."""
    own = getattr(params, "normalization", None)
    if callable(own):
        mean, std = own()
        return _triple(mean), _triple(std)
    if isinstance(params, TimmBackboneParams):
        return timm_normalization(params.name)
    return IMAGENET_MEAN, IMAGENET_STD


def timm_normalization(name: str) -> tuple[Triple, Triple]:
    """The mean and std of timm model ``name``'s pretrained config (ImageNet's when timm has none)."""
    import timm

    cfg = timm.get_pretrained_cfg(name) if timm.is_model(name) else None
    mean, std = getattr(cfg, "mean", None), getattr(cfg, "std", None)
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        if cfg is not None:
            log.warning("timm model %r has no 3-channel mean/std; normalising with ImageNet's", name)
        return IMAGENET_MEAN, IMAGENET_STD
    return _triple(mean), _triple(std)


def _triple(values: Any) -> Triple:
    a, b, c = (float(v) for v in values)
    return a, b, c
