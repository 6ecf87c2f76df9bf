"""Per-sample random draws that do not depend on how a global batch is split over processes.

Under torchrun every process holds one contiguous share of each global batch, and every
process's random generators are seeded alike. A layer that draws random numbers per
sample (dropout masks, angle noise) draws them for the whole global batch and keeps its
own rows: exactly the numbers one process would draw for those samples, so a DDP run
follows the single-process run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class BatchShare:
    """This process's share of every global batch: rows ``rank·n … (rank+1)·n`` of ``world·n``."""

    rank: int = 0
    world: int = 1

    def full_shape(self, local: Tensor) -> tuple[int, ...]:
        """The global batch's shape, given this process's share `local`."""
        return (local.shape[0] * self.world, *local.shape[1:])

    def rows(self, full: Tensor) -> Tensor:
        """This process's rows of a global-batch tensor."""
        if self.world == 1:
            return full
        n = full.shape[0] // self.world
        return full[self.rank * n : (self.rank + 1) * n]


def randn_share(like: Tensor, share: BatchShare) -> Tensor:
    """Standard normal noise shaped like `like`, as one process would draw it for these rows of the global
    batch; drawn in float32 and cast, so a float64 head gets the same noise as a float32 one."""
    return share.rows(torch.randn(share.full_shape(like), device=like.device)).to(like.dtype)


class ShareDropout(nn.Dropout):
    """``nn.Dropout`` whose mask is the rows of the mask drawn for the whole global batch."""

    def __init__(self, p: float = 0.5, share: BatchShare | None = None) -> None:
        super().__init__(p)
        self.batch_share = share or BatchShare()

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or self.batch_share.world == 1:
            return super().forward(x)
        if self.p == 1:
            return x * 0
        # as torch's CPU dropout: a Bernoulli(1 - p) mask over the batch, divided by 1 - p
        mask = torch.empty(self.batch_share.full_shape(x), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * self.batch_share.rows(mask.div_(1 - self.p))


def share_random_draws(model: nn.Module, share: BatchShare) -> list[str]:
    """Make every per-sample random layer of `model` draw for the global batch; returns their names.

    ``nn.Dropout`` layers become `ShareDropout`; modules with a ``batch_share`` attribute
    (e.g. the quantum head's angle noise) get `share`. Other random layers (e.g. timm's
    ``DropPath``) still draw per process.
    """
    changed = []
    for name, module in list(model.named_modules()):
        if type(module) is nn.Dropout and name:
            _replace(model, name, ShareDropout(module.p, share))
            changed.append(name)
        elif isinstance(getattr(module, "batch_share", None), BatchShare):
            module.batch_share = share
            changed.append(name)
    return changed


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    new.train(parent.get_submodule(child).training)
    setattr(parent, child, new)
