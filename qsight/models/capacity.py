"""Parameter counts, and sizing a classical head to another head's count (capacity-matched baselines)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from qsight.errors import BadInputError
from qsight.models.params import MlpHeadParams

TOLERANCE = 0.10  # a matched head's count may differ from its target's by this share
MAX_HIDDEN = 8192  # MlpHeadParams.hidden's upper bound


def count_parameters(module: nn.Module) -> int:
    """Every parameter of ``module`` (a head's parameters all train in some stage)."""
    return sum(p.numel() for p in module.parameters())


def head_parameters(heads: Mapping[str, nn.Module]) -> dict[str, int]:
    """``{head: parameter count}``, in model order."""
    return {name: count_parameters(head) for name, head in heads.items()}


def mlp_parameters(in_dim: int, num_classes: int, hidden: int, layers: int) -> int:
    """Parameters of an ``MlpHead`` (weights and biases of its linear layers)."""
    first = in_dim * hidden + hidden
    middle = (layers - 1) * (hidden * hidden + hidden)
    return first + middle + hidden * num_classes + num_classes


def matched_mlp(params: MlpHeadParams, in_dim: int, num_classes: int, target: int, where: str) -> MlpHeadParams:
    """``params`` with the hidden width whose parameter count is closest to ``target``.

    Raises ``BadInputError`` (naming ``where``) when no width lands within ±10 %.
    """
    layers = params.layers
    best = min(range(1, MAX_HIDDEN + 1),
               key=lambda h: (abs(mlp_parameters(in_dim, num_classes, h, layers) - target), h))
    got = mlp_parameters(in_dim, num_classes, best, layers)
    if abs(got - target) > TOLERANCE * target:
        raise BadInputError(
            f"{where}.match_params: no hidden width gives {target} parameters within ±{TOLERANCE:.0%} "
            f"(closest: hidden = {best}, {got} parameters, with {layers} layer(s) on {in_dim} inputs)"
        )
    return params.model_copy(update={"hidden": best})
