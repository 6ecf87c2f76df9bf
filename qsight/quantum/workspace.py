"""Reused memory for torch-exact's statevector kernels (`statevec`).

At n = 16 and batch 32 a state is 32 MiB, and writing into fresh pages costs several times the
arithmetic done on them (about 20 ms against 4 ms on a 2-core CPU): so the intermediate states of
a call go to three work buffers kept between calls, and what a call keeps for its backward pass
comes from a pool of flat tensors that return to the pool once their `Arena` is garbage, that is
once the autograd graph holding it is freed.
"""

from __future__ import annotations

import math
import threading
import weakref

import torch
from torch import Tensor

_SPARE = 2  # free pool tensors kept for reuse; more are released


class Arena:
    """Consecutive tensors carved from one flat tensor on loan from a `Workspace` pool."""

    def __init__(self, flat: Tensor) -> None:
        self.flat, self.used = flat, 0

    def alloc(self, shape: tuple[int, ...]) -> Tensor:
        n = math.prod(shape)
        out = self.flat[self.used : self.used + n].view(shape)
        self.used += n
        return out


class Workspace:
    """Work buffers and a pool of loans for one compiled circuit; callers hold `lock` while using it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buffers: list[Tensor] = []
        self.pool: list[tuple[Tensor, weakref.ref[Arena]]] = []

    def reset(self, numel: int, like: Tensor) -> None:
        """Three work buffers of at least `numel` elements of like's dtype and device."""
        b = self.buffers
        if not b or b[0].numel() < numel or b[0].dtype != like.dtype or b[0].device != like.device:
            self.buffers = [_empty(numel, like) for _ in range(3)]

    def take(self, shape: tuple[int, ...], *busy: Tensor) -> Tensor:
        """A work buffer holding none of the `busy` tensors, viewed as `shape`."""
        used = {t.data_ptr() for t in busy}
        free = next(b for b in self.buffers if b.data_ptr() not in used)
        return free[: math.prod(shape)].view(shape)

    def lend(self, numel: int, like: Tensor) -> Arena:
        """An arena of `numel` elements; its memory is reused once the arena is garbage."""
        free = [i for i, (_, ref) in enumerate(self.pool) if ref() is None]
        fits = [i for i in free if self._fits(self.pool[i][0], numel, like)]
        base = self.pool[fits[0]][0] if fits else _empty(numel, like)
        arena = Arena(base[:numel])
        drop = set(free[_SPARE:]) - set(fits[:1])
        self.pool = [e for i, e in enumerate(self.pool) if i not in drop and (not fits or i != fits[0])]
        self.pool.append((base, weakref.ref(arena)))
        return arena

    @staticmethod
    def _fits(base: Tensor, numel: int, like: Tensor) -> bool:
        return base.numel() >= numel and base.dtype == like.dtype and base.device == like.device


def _empty(numel: int, like: Tensor) -> Tensor:
    """A normal tensor even under `torch.inference_mode` (it is reused by later calls outside it)."""
    with torch.inference_mode(False):
        return like.new_empty(numel)
