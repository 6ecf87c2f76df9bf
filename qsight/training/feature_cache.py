"""Heads-only stages on a frozen backbone: compute the heads' inputs once."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from qsight.training.distributed import gather_features, gather_rows, shard
from qsight.training.parallel import DistInfo


class FeatureDataset(Dataset[tuple[dict[str, Tensor], int]]):
    """Cached head inputs (``{"backbone": ..., "neck": ...}``) with their labels."""

    def __init__(self, features: Mapping[str, Tensor], labels: Tensor) -> None:
        self.features, self.labels = dict(features), labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], int]:
        return {k: v[i] for k, v in self.features.items()}, int(self.labels[i])


@torch.no_grad()
def compute_features(
    features: Callable[[Tensor], Mapping[str, Tensor]],
    dataset: Dataset[tuple[Tensor, int]],
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    dist: DistInfo | None = None,
) -> FeatureDataset:
    """Run `features` (the model in eval mode) once over `dataset`, keeping results on CPU.

    Under torchrun each process computes its share and every process gets the whole set.
    """
    info = dist or DistInfo()
    part = Subset(dataset, shard(len(dataset), info)) if info.distributed else dataset  # type: ignore[arg-type]
    loader = DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks: dict[str, list[Tensor]] = {}
    labels: list[Tensor] = []
    for x, y in loader:
        for k, v in features(x.to(device)).items():
            chunks.setdefault(k, []).append(v.detach().float().cpu())
        labels.append(torch.as_tensor(y))
    feats = gather_features({k: torch.cat(v) for k, v in chunks.items()}, info)
    return FeatureDataset(feats, gather_rows(torch.cat(labels), info))
