"""Map-style torch datasets: in-memory uint8 arrays, and image files on disk."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from qsight.data.images import Sample, load_rgb
from qsight.data.transforms import Transform


class ArrayDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images ``(N, H, W, 3)`` uint8 held in memory, each passed through ``transform``."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], transform: Transform) -> None:
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        self.images, self.labels, self.transform = images, [int(y) for y in labels], transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
        return self.transform(img), self.labels[i]


class FileDataset(Dataset[tuple[torch.Tensor, int]]):
    """Labelled image files, decoded on access; a file that fails to decode raises ``DataError``."""

    def __init__(self, samples: Sequence[Sample], transform: Transform, size_hint: int | None = None) -> None:
        self.samples, self.transform, self.size_hint = list(samples), transform, size_hint

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        return self.transform(load_rgb(s.path, self.size_hint)), s.label
