"""What the file-based datasets share: checking listed images, splitting, building the bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qsight.data.base import DataBundle
from qsight.data.datasets import FileDataset
from qsight.data.images import Sample, image_problem, load_rgb
from qsight.data.params import FileDatasetParams
from qsight.data.splits import holdout_split
from qsight.data.transforms import display_transform, eval_transform, train_transform
from qsight.errors import DataError


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else ``DataError`` naming it."""
    if not path.is_dir():
        raise DataError(f"{what} {path} not found (or not a folder)")
    return path


def keep_or_raise(problem: str, on_bad: str, skipped: list[str]) -> None:
    """Raise ``DataError(problem)``, or record it in ``skipped`` when bad items are skipped."""
    if on_bad == "skip":
        skipped.append(problem)
    else:
        raise DataError(problem)


def shown(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (for messages)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def check_samples(samples: Sequence[Sample], params: FileDatasetParams, root: Path, skipped: list[str]) -> list[Sample]:
    """The samples whose images pass ``params.image_check``; the others raise or are skipped."""
    good = []
    for s in samples:
        problem = image_problem(s.path, params.image_check)
        if problem is None:
            good.append(s)
        else:
            keep_or_raise(f"{s.ref}: image {shown(s.path, root)} {problem}", params.on_bad_image, skipped)
    return good


def require_all_classes(samples: Sequence[Sample], class_names: Sequence[str], where: str) -> None:
    """``DataError`` when a class has no sample in ``samples``."""
    counts = np.bincount([s.label for s in samples], minlength=len(class_names))
    empty = [name for name, n in zip(class_names, counts, strict=False) if n == 0]
    if empty:
        raise DataError(f"{where}: class(es) {', '.join(map(repr, empty))} have no usable images")


def split_samples(
    samples: Sequence[Sample],
    params: FileDatasetParams,
    seed: int,
    *,
    val: bool = True,
    test: bool = True,
    groups: Sequence[str] | None = None,
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Seeded ``(train, val, test)`` split by ``params.val_fraction``/``test_fraction``, stratified by class
    and, with ``groups``, whole groups at a time; ``val``/``test`` false: that split comes from elsewhere."""
    val_fraction = params.val_fraction if val else 0.0
    test_fraction = params.test_fraction if test else 0.0
    labels = [s.label for s in samples]
    tr, va, te = holdout_split(labels, val_fraction, test_fraction, seed + params.split_seed, groups)
    if val_fraction and not va:
        raise DataError(f"too few images ({len(samples)}) to hold out a validation set")
    if test_fraction and not te:
        raise DataError(f"too few images ({len(samples)}) to hold out a test set")
    return [samples[i] for i in tr], [samples[i] for i in va], [samples[i] for i in te]


def file_bundle(
    train: Sequence[Sample],
    val: Sequence[Sample],
    class_names: Sequence[str],
    params: FileDatasetParams,
    skipped: list[str],
    test: Sequence[Sample] = (),
) -> DataBundle:
    """A ``DataBundle`` over checked image files (no test split when ``test`` is empty)."""
    size = params.image_size
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    train_tf = train_transform(params.augment, size, mean, std, params.resize)
    eval_tf = eval_transform(size, mean, std, params.resize)
    fit = display_transform(size, params.resize)
    val_list = list(val)

    def display_image(i: int) -> np.ndarray:
        img = fit(load_rgb(val_list[i].path, size))
        out: np.ndarray = img.permute(1, 2, 0).numpy().astype(np.uint8)
        return out

    return DataBundle(
        class_names=tuple(class_names),
        train=FileDataset(train, train_tf, size),
        train_plain=FileDataset(train, eval_tf, size),
        val=FileDataset(val_list, eval_tf, size),
        train_labels=[s.label for s in train],
        val_labels=[s.label for s in val_list],
        val_ids=[str(s.path) for s in val_list],
        display_image=display_image,
        lesion_mask=None,
        mean=mean,
        std=std,
        weighted_sampler=params.weighted_sampler,
        skipped=skipped,
        test=FileDataset(test, eval_tf, size) if test else None,
        test_labels=[s.label for s in test],
        test_ids=[str(s.path) for s in test],
    )
