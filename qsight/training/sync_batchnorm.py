"""BatchNorm over the whole global batch when several processes train (torchrun).

``torch.nn.SyncBatchNorm`` refuses CPU tensors ("expected input tensor to be on GPU"),
so gloo runs cannot use it. `GlobalBatchNorm` all-reduces the batch's per-channel sums
and centred squares with differentiable all-reduces (gloo or NCCL): in training mode it
normalises with, and updates its running statistics from, the statistics one process
would compute over the global batch, and its gradients are those of that process.
In evaluation mode, or in a single process, it is plain BatchNorm.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger("qsight.training")

_PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class _SumOverProcesses(torch.autograd.Function):
    """Σ over the processes; its gradient w.r.t. each process's term is Σ of the processes' gradients."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out


def _all_reduce(t: Tensor) -> Tensor:
    out: Tensor = _SumOverProcesses.apply(t)
    return out


def _several_processes() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm (with timm's optional ``drop`` and ``act`` after it) synchronised across processes.

    State-dict keys are those of the BatchNorm it replaces, so checkpoints move freely
    between one-process and several-process runs.
    """

    def __init__(self, source: _BatchNorm) -> None:
        super().__init__(source.num_features, source.eps, source.momentum, source.affine,
                         source.track_running_stats)
        self.weight, self.bias = source.weight, source.bias  # the same parameters and buffers, not copies
        self.running_mean, self.running_var = source.running_mean, source.running_var
        self.num_batches_tracked = source.num_batches_tracked
        self.drop: nn.Module = _child(source, "drop")
        self.act: nn.Module = _child(source, "act")
        self.train(source.training)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        y = self._global(x) if self.training and _several_processes() else super().forward(x)
        out: Tensor = self.act(self.drop(y))
        return out

    def _global(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        count = torch.full((1,), x.numel() // x.shape[1], dtype=torch.float64, device=x.device)
        sums = _all_reduce(torch.cat([xf.sum(dims, dtype=torch.float64), count]))
        n, mean = sums[-1], sums[:-1] / sums[-1]
        centred = xf - mean.to(xf.dtype).view(shape)
        var = _all_reduce(centred.square().sum(dims, dtype=torch.float64)) / n
        y = centred * torch.rsqrt(var + self.eps).to(xf.dtype).view(shape)
        if self.weight is not None and self.bias is not None:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        self._update_running(mean.detach(), var.detach(), n.detach())
        out: Tensor = y.to(x.dtype)
        return out

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, n: Tensor) -> None:
        if not self.track_running_stats or self.running_mean is None or self.running_var is None:
            return
        factor = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as torch's BatchNorm
                factor = 1.0 / float(self.num_batches_tracked)
        unbiased = var * n / (n - 1).clamp(min=1)
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def _child(module: nn.Module, name: str) -> nn.Module:
    child = getattr(module, name, None)
    return child if isinstance(child, nn.Module) else nn.Identity()


def _is_norm_act(module: nn.Module) -> bool:
    """timm's BatchNormAct2d: BatchNorm, then its ``drop`` and ``act`` children."""
    return isinstance(getattr(module, "drop", None), nn.Module) and isinstance(getattr(module, "act", None), nn.Module)


def sync_batchnorm(model: nn.Module) -> list[str]:
    """Replace `model`'s BatchNorm layers by `GlobalBatchNorm` in place; returns the names replaced.

    A BatchNorm subclass of unknown behaviour is left alone (with a warning).
    """
    replaced = []
    for name, module in list(model.named_modules()):
        if not name or not isinstance(module, _BatchNorm) or isinstance(module, GlobalBatchNorm):
            continue
        if type(module) in _PLAIN or _is_norm_act(module):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, GlobalBatchNorm(module))
            replaced.append(name)
        else:
            log.warning("%s (%s): not synchronised across processes", name, type(module).__name__)
    return replaced
