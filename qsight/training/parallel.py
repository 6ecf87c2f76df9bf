"""DataParallel decisions, torchrun/DDP set-up and the batch sharding both share."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler

from qsight.config.spec import StageConfig
from qsight.metric_names import ENSEMBLE
from qsight.models.output import ModelOutput

log = logging.getLogger("qsight.training")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    log.info("distributed: rank %d of %d (%s)", info.rank, info.world_size, dist.get_backend())
    return info


def shutdown_distributed() -> None:
    """Leave the torchrun process group, if one was joined (at the end of a run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def trains_only_quantum(stage: StageConfig, quantum_heads: Sequence[str]) -> bool:
    """True when every module the stage trains is a quantum head."""
    return all(m.startswith("heads.") and m[len("heads.") :] in quantum_heads for m in stage.train)


def use_data_parallel(stage: StageConfig, quantum_heads: Sequence[str], gpu_count: int) -> bool:
    """Whether to wrap the model in ``nn.DataParallel`` for this stage.

    ``auto`` uses it only with several GPUs and when the stage trains more than
    quantum heads: replicas would only queue on the serialised sampler.
    """
    if stage.data_parallel == "never":
        return False
    if stage.data_parallel == "force":
        return gpu_count >= 1
    return gpu_count > 1 and not trains_only_quantum(stage, quantum_heads)


class _AsDict(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = self.net(x)
        return {ENSEMBLE: out.ensemble, **{f"head:{k}": v for k, v in out.heads.items()}}


class DataParallelOutput(nn.Module):
    """``nn.DataParallel`` over a model returning `ModelOutput` (which DataParallel cannot gather)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.parallel = nn.DataParallel(_AsDict(net))

    def forward(self, x: Tensor) -> ModelOutput:
        out: dict[str, Tensor] = self.parallel(x)
        heads = {k[len("head:") :]: v for k, v in out.items() if k.startswith("head:")}
        return ModelOutput(heads, out[ENSEMBLE])


class ShardedBatchSampler(Sampler[list[int]]):
    """Global batches from a seeded permutation; each rank takes its contiguous share.

    With one process this is an ordinary shuffled batch sampler, so a DDP run
    over the same global batch sees exactly the samples a single process sees.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int, shuffle: bool, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, weights: Sequence[float] | None = None) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        gen = torch.Generator().manual_seed(self.seed)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.size, replacement=True, generator=gen).tolist()
        return torch.randperm(self.size, generator=gen).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        share = self.batch_size // self.world_size
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            if len(batch) < self.batch_size and (self.drop_last or self.world_size > 1):
                return
            yield batch[self.rank * share : (self.rank + 1) * share] if self.world_size > 1 else batch

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full if (self.drop_last or self.world_size > 1 or not rest) else full + 1
