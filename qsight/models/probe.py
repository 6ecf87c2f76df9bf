"""A cheap check, before any data is built, that the backbone exists and takes the configured image size.

The backbone is built on PyTorch's meta device (no memory, no weights, no downloads) and a dummy batch
goes through it, so a model that needs another input size fails in seconds with a clear message
instead of at the first training step.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from qsight.errors import BadInputError
from registry import Params, component_type

if TYPE_CHECKING:
    from qsight.config.spec import ExperimentSpec

log = logging.getLogger("qsight.models")


def probe_backbone(backbone: Params, image_size: int) -> int:
    """Build `backbone` on the meta device and push a (2, 3, size, size) batch through it.

    Returns the feature width; an unknown model or an input size it cannot take is a `BadInputError`
    naming the model, the size and what the model said.
    """
    import torch

    from qsight.components import BACKBONES

    kind = component_type(backbone)
    cheap = {k: v for k, v in (("pretrained", False), ("checkpoint", None)) if k in type(backbone).model_fields}
    params = backbone.model_copy(update=cheap)
    name = f"{kind} {getattr(params, 'name', '')}".strip()
    with torch.device("meta"):
        try:
            model = BACKBONES.get(kind).build(params)
        except BadInputError as exc:
            raise BadInputError(f"model.backbone: {exc}") from None
        try:
            features = model(torch.empty(2, 3, image_size, image_size))
        except Exception as exc:  # any failure here is the model refusing the input shape
            raise BadInputError(
                f"model.backbone: {name} does not take {image_size}×{image_size} images (data.image_size): "
                f"{' '.join(str(exc).split())[:300]}"
            ) from None
    if features.ndim != 2:
        raise BadInputError(f"model.backbone: {name} gives features of shape {tuple(features.shape)}, not (batch, dim)")
    return int(features.shape[1])


def probe_spec(spec: ExperimentSpec) -> int:
    """`probe_backbone` for a spec's backbone at its dataset's ``image_size`` (224 when it has none)."""
    size = int(getattr(spec.data, "image_size", 224))
    dim = probe_backbone(spec.model.backbone, size)
    log.info("backbone %s takes %d×%d images: %d features", component_type(spec.model.backbone), size, size, dim)
    return dim
