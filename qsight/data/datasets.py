"""Map-style torch datasets: in-memory uint8 arrays, and image files on disk.

A file that fails to load raises ``DataError``, unless the dataset skips bad
images (``on_bad_image = "skip"``): then the file is marked failed and a
stand-in is returned instead, with its own label: the next loadable sample of
the same class in list order, which keeps the class counts (and so the class
and sampler weights) exact; only when the class has none left, the next
loadable sample of any class. The length of the dataset, and so every
sampler, stays as planned. Marks live in a shared-memory tensor, so
DataLoader worker processes (fork or spawn) mark what they find and the main
process sees it (``failed``); a file once marked is not tried again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from qsight.data.images import Sample, load_rgb
from qsight.data.transforms import Transform
from qsight.errors import DataError

log = logging.getLogger("qsight.data")


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


def failure_marks(n: int) -> torch.Tensor:
    """``n`` False flags in shared memory (plain memory where the system offers none)."""
    marks = torch.zeros(n, dtype=torch.bool)
    with contextlib.suppress(RuntimeError):  # without it, marks made in worker processes stay there
        marks.share_memory_()  # type: ignore[no-untyped-call]
    return marks


class FileDataset(Dataset[tuple[torch.Tensor, int]]):
    """Labelled image files, decoded on access (see the module docstring for ``skip_bad``).

    Datasets over the same samples (train and train_plain) share ``marks``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform,
        size_hint: int | None = None,
        *,
        skip_bad: bool = False,
        marks: torch.Tensor | None = None,
    ) -> None:
        self.samples, self.transform, self.size_hint = list(samples), transform, size_hint
        self.skip_bad = skip_bad
        self.marks = marks if marks is not None else failure_marks(len(self.samples))
        self._by_class: dict[int, list[int]] = {}
        self._place: list[int] = []  # sample i is self._by_class[label][self._place[i]]
        for i, s in enumerate(self.samples):
            same = self._by_class.setdefault(s.label, [])
            self._place.append(len(same))
            same.append(i)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.load(i)
        return self.transform(image), label

    def load(self, i: int) -> tuple[Image.Image, int]:
        """Sample ``i`` as an RGB image and its label, or its stand-in when skipping bad files."""
        s = self.samples[i]
        if not self.skip_bad:
            return load_rgb(s.path, self.size_hint), s.label
        for j in self._stand_ins(i):
            if bool(self.marks[j]):
                continue
            try:
                return load_rgb(self.samples[j].path, self.size_hint), self.samples[j].label
            except DataError as exc:
                self.marks[j] = True
                log.warning("%s: skipped, %s", self.samples[j].ref, exc)
        raise DataError(f"{s.ref}: no image of this set can be read any more")

    def _stand_ins(self, i: int) -> Iterator[int]:
        """``i``, the other samples of its class, then those of other classes, each in list order from ``i``."""
        label = self.samples[i].label
        same, k = self._by_class[label], self._place[i]
        for step in range(len(same)):
            yield same[(k + step) % len(same)]
        n = len(self.samples)
        for step in range(1, n):
            j = (i + step) % n
            if self.samples[j].label != label:
                yield j

    def failed(self) -> list[Sample]:
        """The samples marked failed so far, by this process or a worker."""
        return [self.samples[int(j)] for j in torch.nonzero(self.marks).flatten().tolist()]
