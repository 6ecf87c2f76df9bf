"""What a dataset component hands to the rest of qsight."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor
    from torch.utils.data import Dataset


@dataclass(frozen=True)
class DataContext:
    """What a dataset factory may use besides its params."""

    seed: int
    cache_dir: Path  # <reports root>/cache; synthetic images are cached here


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
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    weighted_sampler: bool = False  # draw training batches with class-balancing weights
    skipped: list[str] = field(default_factory=list)  # bad images skipped (on_bad_image="skip")
    # the held-out test split, evaluated once at the end of a run (None: the dataset has none)
    test: Dataset[tuple[Tensor, int]] | None = None
    test_labels: Sequence[int] = ()
    test_ids: Sequence[str] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
