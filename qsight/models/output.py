"""What a HybridModel returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class ModelOutput:
    """Per-head logits of the active heads, and the ensemble's log-probabilities.

    ``heads`` holds only the heads active in the current stage. ``ensemble`` is
    ``log`` of the combined class probabilities, so ``softmax(ensemble)`` and
    ``argmax(ensemble)`` work as for any head's logits.
    """

    heads: dict[str, Tensor]
    ensemble: Tensor
