"""A cheap check, before any data is built, that the backbone exists and takes the configured image size.

The backbone is built on PyTorch's meta device (no memory, no weights, no downloads) and a dummy batch
goes through it, so a model that needs another input size fails in seconds with a clear message
instead of at the first training step. A backbone of at most `CPU_PROBE_PARAMS` parameters is then
rebuilt on the CPU for the dummy batch instead: a process's first forward pass on the meta device costs
about 1.7 s (its kernels load on first use), a resnet18 built and run on the CPU 0.16 s. The CPU's
random state is restored after, so the probe draws nothing from the run's seeded stream.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from qsight.errors import BadInputError
from registry import Params, component_type

if TYPE_CHECKING:
    from qsight.config.spec import ExperimentSpec

log = logging.getLogger("qsight.models")
CPU_PROBE_PARAMS = 30_000_000  # ~120 MB of float32 weights, built and dropped


def probe_backbone(backbone: Params, image_size: int) -> int:
    """Build `backbone` (on the meta device; on the CPU when small) and push a (2, 3, size, size) batch through it.

    Returns the feature width; an unknown model or an input size it cannot take is a `BadInputError`
    naming the model, the size and what the model said.
    """
    import torch

    kind = component_type(backbone)
    cheap = {k: v for k, v in (("pretrained", False), ("checkpoint", None)) if k in type(backbone).model_fields}
    params = backbone.model_copy(update=cheap)
    name = f"{kind} {getattr(params, 'name', '')}".strip()
    with torch.device("meta"):
        model = _build(kind, params)
    small = sum(p.numel() for p in model.parameters()) <= CPU_PROBE_PARAMS
    with torch.random.fork_rng(devices=[]), torch.no_grad(), torch.device("cpu" if small else "meta"):
        if small:
            model = _build(kind, params).eval()
        try:
            features = model(torch.zeros(2, 3, image_size, image_size))
        except Exception as exc:  # any failure here is the model refusing the input shape
            raise BadInputError(
                f"model.backbone: {name} does not take {image_size}×{image_size} images (data.image_size): "
                f"{' '.join(str(exc).split())[:300]}"
            ) from None
    if features.ndim != 2:
        raise BadInputError(f"model.backbone: {name} gives features of shape {tuple(features.shape)}, not (batch, dim)")
    return int(features.shape[1])


def _build(kind: str, params: Params) -> Any:
    from qsight.components import BACKBONES

    try:
        return BACKBONES.get(kind).build(params)
    except BadInputError as exc:
        raise BadInputError(f"model.backbone: {exc}") from None


def probe_spec(spec: ExperimentSpec) -> int:
    """`probe_backbone` for a spec's backbone at its dataset's ``image_size`` (224 when it has none)."""
    size = int(getattr(spec.data, "image_size", 224))
    dim = probe_backbone(spec.model.backbone, size)
    log.info("backbone %s takes %d×%d images: %d features", component_type(spec.model.backbone), size, size, dim)
    return dim
