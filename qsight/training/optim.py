"""Per-stage optimizer and learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from qsight.config.spec import StageConfig


def make_optimizer(stage: StageConfig, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW or SGD over exactly the stage's trainable parameters."""
    if stage.optimizer == "sgd":
        return torch.optim.SGD(params, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay)
    return torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)


def lr_factor(stage: StageConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then constant or cosine decay to zero at the stage's last step."""
    warmup = round(stage.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if stage.scheduler == "constant":
        return 1.0
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, stage: StageConfig, steps_per_epoch: int) -> LambdaLR:
    """A per-optimizer-step schedule for the whole stage."""
    total = max(1, steps_per_epoch * stage.epochs)
    return LambdaLR(optimizer, lambda step: lr_factor(stage, step, total, steps_per_epoch))
