"""Combiners: the active heads' logits → ensemble log-probabilities.

The ensemble is ``log Σ_h w_h softmax(logits_h)`` over the heads given (the
active ones), computed stably as a log-sum-exp. Heads not given take no part:
their weights are neither used nor renormalised over.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from qsight.errors import BadInputError
from qsight.models.params import CombinerSpec


def mix(head_logits: Sequence[Tensor], log_weights: Tensor) -> Tensor:
    """``log Σ_h exp(log_weights[h]) · softmax(head_logits[h])`` (B, C), as a stable log-sum-exp."""
    log_probs = torch.stack([torch.log_softmax(logits.float(), dim=-1) for logits in head_logits])
    return torch.logsumexp(log_probs + log_weights.to(log_probs.dtype).view(-1, 1, 1), dim=0)


class Combiner(nn.Module):
    """Base: subclasses give per-head log-weights over the heads passed in."""

    def log_weights(self, names: Sequence[str], like: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, head_logits: Mapping[str, Tensor]) -> Tensor:
        """Ensemble log-probabilities (B, C) of the heads in `head_logits` (in its order)."""
        if not head_logits:
            raise ValueError("the ensemble needs at least one active head")
        names = list(head_logits)
        logits = [head_logits[n] for n in names]
        return mix(logits, self.log_weights(names, logits[0].float()))

    def parameters_for(self, names: Sequence[str]) -> Iterator[nn.Parameter]:
        """The parameters that take part when only `names` are active."""
        return iter(())


class MeanCombiner(Combiner):
    """Equal weights: the mean of the active heads' probabilities (no parameters)."""

    def log_weights(self, names: Sequence[str], like: Tensor) -> Tensor:
        return torch.full((len(names),), -math.log(len(names)), dtype=like.dtype, device=like.device)


class GatedCombiner(Combiner):
    """Learned gate logits, one scalar parameter per head; softmax over the active heads only.

    Gates start at zero, so an untrained gated combiner equals the mean. An
    inactive head's gate is not used, so it gets no gradient (``grad`` stays
    ``None``) and optimizers leave it untouched, weight decay included.
    """

    def __init__(self, head_names: Sequence[str]) -> None:
        super().__init__()
        self.gates = nn.ParameterDict({n: nn.Parameter(torch.zeros(())) for n in head_names})

    def log_weights(self, names: Sequence[str], like: Tensor) -> Tensor:
        unknown = [n for n in names if n not in self.gates]
        if unknown:
            raise BadInputError(f"gated combiner has no gate for head(s) {unknown}")
        return torch.log_softmax(torch.stack([self.gates[n] for n in names]), dim=0)

    def parameters_for(self, names: Sequence[str]) -> Iterator[nn.Parameter]:
        return (self.gates[n] for n in names if n in self.gates)

    def weights(self, names: Sequence[str]) -> dict[str, float]:
        """The current gate weights over `names` (for logging)."""
        w = torch.softmax(torch.stack([self.gates[n].detach() for n in names]), dim=0)
        return {n: float(v) for n, v in zip(names, w, strict=True)}


def build_combiner(spec: CombinerSpec, head_names: Sequence[str]) -> Combiner:
    """The combiner named by `spec.type` for these heads."""
    if spec.type == "mean":
        return MeanCombiner()
    return GatedCombiner(head_names)
