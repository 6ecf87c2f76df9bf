"""What a dataset component hands to the rest of qsight."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor
    from torch.utils.data import Dataset

Triple = tuple[float, float, float]
#: ImageNet channel statistics: the default normalisation, and the tiny CNN's.
IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataContext:
    """What a dataset factory may use besides its params.

    ``mean``/``std`` normalise the model inputs: the backbone's own statistics
    (see ``qsight.models.normalization``), ImageNet's when none are given.
    """

    seed: int
    cache_dir: Path  # <reports root>/cache; synthetic images are cached here
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD


@dataclass
class DataBundle:
    """Train/validation (and optional test) data of one experiment.

    Every dataset item is ``(image, label)``: a float tensor ``(3, H, W)``
    normalised with ``mean``/``std``, and an int class index. Validation order
    is fixed (index ``i`` of ``val`` is ``val_ids[i]``).
    """

    class_names: tuple[str, ...]
    train: Dataset[tuple[Tensor, int]]  # with training augmentation
    train_plain: Dataset[tuple[Tensor, int]]  # same samples, deterministic eval transform
    val: Dataset[tuple[Tensor, int]]
    train_labels: Sequence[int]
    val_labels: Sequence[int]
    val_ids: Sequence[str]  # an id or path per validation sample
    display_image: Callable[[int], np.ndarray]  # val index -> HxWx3 uint8 at model input size
    lesion_mask: Callable[[int], np.ndarray] | None = None  # val index -> HxW bool, or None
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD
    weighted_sampler: bool = False  # draw training batches with class-balancing weights
    skipped: list[str] = field(default_factory=list)  # bad items skipped when the bundle was built
    val_names: Sequence[str] | None = None  # readable name per validation sample; none: from val_ids
    failed_on_load: Callable[[], list[str]] | None = None  # bad images found (and skipped) while loading
    _names: list[str] | None = field(default=None, init=False, repr=False)
    # the held-out test split, evaluated once at the end of a run (None: the dataset has none)
    test: Dataset[tuple[Tensor, int]] | None = None
    test_labels: Sequence[int] = ()
    test_ids: Sequence[str] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def skipped_images(self) -> list[str]:
        """Everything skipped: when the bundle was built, and since, while loading (one line each)."""
        late = self.failed_on_load() if self.failed_on_load is not None else []
        return [*self.skipped, *late]

    def sample_name(self, i: int) -> str:
        """A file-name-safe name of validation sample ``i``, unique within the validation set."""
        if self._names is None:
            raw = self.val_names if self.val_names is not None else [Path(str(v)).stem for v in self.val_ids]
            self._names = unique_names(raw)
        return self._names[i]


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` made file-name safe (letters, digits, ``.-_``); a repeat gets ``-<index>`` appended."""
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "sample"
        name, k = safe, 0
        while name in seen:
            k += 1
            name = f"{safe}-{i}" if k == 1 else f"{safe}-{i}-{k}"
        seen.add(name)
        out.append(name)
    return out
