"""One training epoch and one prediction pass: the inner loops, nothing else."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from qsight.errors import RunFailedError
from qsight.metric_names import ENSEMBLE

Batch = tuple[Any, Tensor]
LossFn = Callable[[Any, Tensor], tuple[Tensor, dict[str, Tensor]]]


class NonFiniteLossError(RunFailedError):
    """A loss became NaN or infinite."""


@dataclass
class EpochStats:
    """Mean losses of one epoch and its throughput."""

    losses: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    steps: int = 0
    seconds: float = 0.0


@dataclass
class StepContext:
    """What one training step needs besides the batch."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    params: list[nn.Parameter]
    device: torch.device
    accumulation: int = 1
    grad_clip: float | None = None
    scaler: torch.amp.GradScaler | None = None
    amp: bool = False
    clip_groups: list[list[nn.Parameter]] | None = None  # clipped each on its own; None: `params` as one


def to_device(x: Any, device: torch.device) -> Any:
    """Move a tensor or a dict of tensors."""
    if isinstance(x, Mapping):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x.to(device, non_blocking=True)


def _autocast(ctx: StepContext) -> Any:
    if ctx.amp and ctx.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def _optimizer_step(ctx: StepContext) -> None:
    if ctx.scaler is not None:
        ctx.scaler.unscale_(ctx.optimizer)
    if ctx.grad_clip is not None:
        for group in ctx.clip_groups or [ctx.params]:
            torch.nn.utils.clip_grad_norm_(group, ctx.grad_clip)
    if ctx.scaler is not None:
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        ctx.optimizer.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.scheduler.step()


def train_epoch(
    loss_fn: LossFn,
    batches: Iterable[Batch],
    ctx: StepContext,
    *,
    on_step: Callable[[int, dict[str, float], int], None] | None = None,
    limit: int | None = None,
) -> EpochStats:
    """Forward, backward and (every `accumulation` batches) an optimizer step."""
    stats, totals = EpochStats(), dict[str, float]()
    start = time.perf_counter()
    ctx.optimizer.zero_grad(set_to_none=True)
    pending = 0
    for i, (x, y) in enumerate(batches):
        if limit is not None and i >= limit:
            break
        x, y = to_device(x, ctx.device), y.to(ctx.device)
        with _autocast(ctx):
            loss, parts = loss_fn(x, y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at batch {i}")
        scaled = loss / ctx.accumulation
        (ctx.scaler.scale(scaled) if ctx.scaler is not None else scaled).backward()  # type: ignore[no-untyped-call]
        pending += 1
        if pending == ctx.accumulation:
            _optimizer_step(ctx)
            pending, stats.steps = 0, stats.steps + 1
        values = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}}
        for k, v in values.items():
            totals[k] = totals.get(k, 0.0) + v * len(y)
        stats.samples += len(y)
        if on_step is not None:
            on_step(i, values, len(y))
    if pending:
        _optimizer_step(ctx)
        stats.steps += 1
    stats.seconds = time.perf_counter() - start
    stats.losses = {k: v / max(1, stats.samples) for k, v in totals.items()}
    return stats


@dataclass
class Predictions:
    """Class probabilities per head (and ``ensemble``) over a whole split, in order."""

    labels: np.ndarray
    probs: dict[str, np.ndarray]


@torch.no_grad()
def predict(
    forward: Callable[[Any], Any], batches: Iterable[Batch], device: torch.device, limit: int | None = None
) -> Predictions:
    """Run `forward` (returning a ModelOutput) over `batches` and collect probabilities."""
    labels: list[np.ndarray] = []
    probs: dict[str, list[np.ndarray]] = {}
    for i, (x, y) in enumerate(batches):
        if limit is not None and i >= limit:
            break
        out = forward(to_device(x, device))
        for name, logits in out.heads.items():
            probs.setdefault(name, []).append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        probs.setdefault(ENSEMBLE, []).append(out.ensemble.float().exp().cpu().numpy())
        labels.append(y.numpy())
    return Predictions(np.concatenate(labels), {k: np.concatenate(v) for k, v in probs.items()})
