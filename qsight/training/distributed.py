"""What several processes share: split a split's samples, gather predictions, average losses.

Every helper is a no-op for one process; with several, every process must call it at the
same point (they are collectives).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from qsight.models.global_batch import BatchShare, share_random_draws
from qsight.training.loop import EpochStats, Predictions, predict
from qsight.training.parallel import DistInfo
from qsight.training.sync_batchnorm import sync_batchnorm


def prepare_model(model: nn.Module, info: DistInfo, *, sync_bn: bool) -> dict[str, list[str]]:
    """Make `model` train under DDP as one process would: global-batch BatchNorm and random draws.

    Returns the names of the layers changed (nothing for one process).
    """
    if not info.distributed:
        return {}
    return {
        "batchnorm": sync_batchnorm(model) if sync_bn else [],
        "random": share_random_draws(model, BatchShare(info.rank, info.world_size)),
    }


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (prediction needs no collectives)."""
    from torch.nn.parallel import DistributedDataParallel

    return net.module if isinstance(net, DistributedDataParallel) else net


def shard(size: int, info: DistInfo) -> range:
    """This process's contiguous share of ``range(size)``; the shares in rank order make up the whole."""
    per = math.ceil(size / info.world_size)
    return range(min(size, info.rank * per), min(size, (info.rank + 1) * per))


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_rows(t: Tensor, info: DistInfo) -> Tensor:
    """Every process's `t` (rows may differ in number) concatenated in rank order, on every process."""
    if not info.distributed:
        return t
    device = _comm_device()
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(info.world_size)]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], dtype=torch.int64, device=device))
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=device)
    padded[: t.shape[0]] = t.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(t.device)


def gather_features(features: Mapping[str, Tensor], info: DistInfo) -> dict[str, Tensor]:
    """`gather_rows` of each tensor (the same keys on every process)."""
    return {k: gather_rows(features[k], info) for k in sorted(features)}


def gather_predictions(preds: Predictions, info: DistInfo) -> Predictions:
    """Every process's predictions of its shard, in rank order: those of the whole split."""
    if not info.distributed:
        return preds

    def rows(a: np.ndarray) -> np.ndarray:
        out: np.ndarray = gather_rows(torch.from_numpy(np.ascontiguousarray(a)), info).numpy()
        return out

    return Predictions(rows(preds.labels), {k: rows(preds.probs[k]) for k in sorted(preds.probs)})


def reduce_epoch_stats(stats: EpochStats, info: DistInfo) -> EpochStats:
    """Losses averaged over every process's samples; samples summed; seconds the slowest process's."""
    if not info.distributed:
        return stats
    keys = sorted(stats.losses)
    sums = torch.tensor([stats.samples, *(stats.losses[k] * stats.samples for k in keys)], dtype=torch.float64)
    seconds = torch.tensor([stats.seconds], dtype=torch.float64)
    dist.all_reduce(sums)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    total = float(sums[0])
    losses = {k: float(v) / max(total, 1.0) for k, v in zip(keys, sums[1:].tolist(), strict=True)}
    return replace(stats, losses=losses, samples=int(total), seconds=float(seconds))


def mean_over_processes(values: Mapping[str, float], info: DistInfo) -> dict[str, float]:
    """Each value averaged over the processes (equal shares: the global batch's mean)."""
    if not info.distributed:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def broadcast_from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every process (e.g. the epoch's metrics, so every process decides alike)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process, so evaluation agrees."""
    if not info.distributed:
        return
    device = _comm_device()
    for buf in model.buffers():
        if buf.numel():
            t = buf.detach().to(device)
            dist.broadcast(t, src=0)
            buf.data.copy_(t)


def global_weighted_mean(
    loss: Tensor, parts: Mapping[str, Tensor], class_weights: Tensor | None, labels: Tensor, info: DistInfo
) -> tuple[Tensor, dict[str, Tensor]]:
    """Class-weighted mean losses of this share, rescaled so that the processes' average is the
    global batch's weighted mean (each share's mean divides by its own weight sum, not the batch's)."""
    if class_weights is None or not info.distributed:
        return loss, dict(parts)
    local = class_weights[labels].sum().detach().to(torch.float64)
    total = local.to(_comm_device()).reshape(1).clone()
    dist.all_reduce(total)
    k = (local * info.world_size / total.to(local.device).reshape(())).to(loss.dtype)
    return loss * k, {n: v * k for n, v in parts.items()}


def predict_split(
    forward: nn.Module, dataset: Dataset[Any], info: DistInfo, *, batch_size: int, device: torch.device,
    num_workers: int = 0, limit: int | None = None,
) -> tuple[Predictions, list[int]]:
    """Predictions over a whole split, each process predicting its shard (at most `limit` samples).

    Returns the gathered predictions (on every process) and the split indices they belong to, in order.
    `forward` is the plain model (not a DDP wrapper), in evaluation mode.
    """
    def mine(rank: int) -> list[int]:
        return list(shard(len(dataset), DistInfo(rank, info.world_size)))[:limit]  # type: ignore[arg-type]

    loader = DataLoader(Subset(dataset, mine(info.rank)), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    preds = gather_predictions(predict(forward, loader, device), info)
    return preds, [i for r in range(info.world_size) for i in mine(r)]
