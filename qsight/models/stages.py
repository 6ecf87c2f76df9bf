"""Stage semantics as pure functions: names checked, frozen sets, cacheability, the loss.

A stage names the modules that train (``backbone``, ``neck``, ``combiner``,
``heads.<name>``) and the active heads. Everything else is frozen: no gradient,
eval mode, bit-identical through the stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from qsight.errors import BadInputError
from registry import unknown_message


class StageLike(Protocol):
    """What the model reads from a `qsight.config.spec.StageConfig`."""

    @property
    def heads(self) -> Sequence[str]: ...

    @property
    def train(self) -> Sequence[str]: ...

    @property
    def loss_weights(self) -> Mapping[str, float]: ...


def check_names(kind: str, names: Sequence[str], known: Sequence[str]) -> None:
    """`BadInputError` (with suggestions) for any name not in `known`."""
    for name in names:
        if name not in known:
            raise BadInputError(unknown_message(kind, name, list(known)))


def upstream_of(head_inputs: Mapping[str, str], heads: Sequence[str]) -> set[str]:
    """Modules whose outputs the given heads read: the backbone, and the neck if any head reads it."""
    needed = {"backbone"}
    if any(head_inputs[h] == "neck" for h in heads):
        needed.add("neck")
    return needed


def frozen_upstream(head_inputs: Mapping[str, str], heads: Sequence[str], train: Sequence[str]) -> bool:
    """True when nothing upstream of these heads' inputs trains (their inputs can be cached)."""
    return not (upstream_of(head_inputs, heads) & set(train))


def head_losses(
    head_logits: Mapping[str, Tensor], labels: Tensor, class_weights: Tensor | None
) -> dict[str, Tensor]:
    """Cross-entropy of each head's logits."""
    return {
        name: F.cross_entropy(logits.float(), labels, weight=class_weights)
        for name, logits in head_logits.items()
    }


def weighted_total(losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """Σ weight × loss over `losses` (missing weights are 1)."""
    terms = [float(weights.get(name, 1.0)) * loss for name, loss in losses.items()]
    total: Tensor = torch.stack(terms).sum()
    return total


def ensemble_nll(ensemble: Tensor, labels: Tensor, class_weights: Tensor | None) -> Tensor:
    """Negative log-likelihood of the ensemble's log-probabilities."""
    return F.nll_loss(ensemble.float(), labels, weight=class_weights)
