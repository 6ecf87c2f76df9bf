"""What the file-based datasets share: checking listed images, splitting, building the bundle."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qsight.data.base import DataBundle, DataContext
from qsight.data.datasets import FileDataset, failure_marks
from qsight.data.images import Sample, image_problem
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


def drop_duplicates(
    train: Sequence[Sample], val: Sequence[Sample], params: FileDatasetParams, root: Path, skipped: list[str]
) -> tuple[list[Sample], list[Sample]]:
    """``train`` and ``val`` without a second listing of one file (after following links).

    A repeat would put one image in both splits, or train it under two labels:
    ``DataError`` naming the repeats, or, with ``duplicates = "first"``, the
    first listing kept (training before validation) and the others recorded in
    ``skipped``.
    """
    first: dict[str, Sample] = {}
    repeats: list[str] = []
    kept: tuple[list[Sample], list[Sample]] = ([], [])
    for part, samples in zip(kept, (train, val), strict=True):
        for s in samples:
            key = os.path.realpath(s.path)
            if key not in first:
                first[key] = s
                part.append(s)
                continue
            repeats.append(_repeat(s, first[key], root))
    if repeats and params.duplicates == "error":
        more = f"; {len(repeats)} repeats in all" if len(repeats) > 3 else ""
        raise DataError(f"{'; '.join(repeats[:3])}{more} (duplicates = \"first\" keeps the first listing)")
    skipped += [f"{r}: dropped" for r in repeats]
    return kept


def _repeat(s: Sample, first: Sample, root: Path) -> str:
    where = shown(first.path, root)
    notes = [where] if first.path != s.path and where != first.ref else []
    notes += [f"labels {first.label} and {s.label}"] if first.label != s.label else []
    extra = f" ({', '.join(notes)})" if notes else ""
    return f"{s.ref}: image {shown(s.path, root)} repeats {first.ref}{extra}"


def require_all_classes(samples: Sequence[Sample], class_names: Sequence[str], where: str, hint: str = "") -> None:
    """``DataError`` when a class has no sample in ``samples``."""
    counts = np.bincount([s.label for s in samples], minlength=len(class_names))
    empty = [name for name, n in zip(class_names, counts, strict=False) if n == 0]
    if empty:
        raise DataError(f"{where}: class(es) {', '.join(map(repr, empty))} have no usable images{hint}")


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


def readable_names(paths: Sequence[Path]) -> list[str]:
    """Each path relative to the folder all share, without suffix, ``/`` written ``__`` (``mild__img4``)."""
    if not paths:
        return []
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [
        os.path.splitext(os.path.relpath(os.path.abspath(p), common))[0].replace(os.sep, "__") for p in paths
    ]


def file_bundle(
    train: Sequence[Sample],
    val: Sequence[Sample],
    class_names: Sequence[str],
    params: FileDatasetParams,
    ctx: DataContext,
    skipped: list[str],
    root: Path,
    test: Sequence[Sample] = (),
) -> DataBundle:
    """A ``DataBundle`` over checked image files, normalised with ``ctx.mean``/``ctx.std`` (no test split
    when ``test`` is empty)."""
    size, mean, std, skip = params.image_size, ctx.mean, ctx.std, params.on_bad_image == "skip"
    fit = display_transform(size, params.resize)
    marks = failure_marks(len(train))
    train_set = FileDataset(train, train_transform(params.augment, size, mean, std, params.resize), size,
                            skip_bad=skip, marks=marks)
    train_plain = FileDataset(train, eval_transform(size, mean, std, params.resize), size, skip_bad=skip, marks=marks)
    val_set = FileDataset(val, eval_transform(size, mean, std, params.resize), size, skip_bad=skip)

    def display_image(i: int) -> np.ndarray:
        out: np.ndarray = fit(val_set.load(i)[0]).permute(1, 2, 0).numpy().astype(np.uint8)
        return out

    def failed_on_load() -> list[str]:
        bad = train_set.failed() + val_set.failed()
        return [f"{s.ref}: image {shown(s.path, root)} {load_problem(s)}" for s in bad]

    return DataBundle(
        class_names=tuple(class_names),
        train=train_set,
        train_plain=train_plain,
        val=val_set,
        train_labels=[s.label for s in train],
        val_labels=[s.label for s in val],
        val_ids=[str(s.path) for s in val],
        display_image=display_image,
        lesion_mask=None,
        mean=mean,
        std=std,
        weighted_sampler=params.weighted_sampler,
        skipped=skipped,
        val_names=readable_names([s.path for s in val]),
        failed_on_load=failed_on_load,
        test=FileDataset(test, eval_transform(size, mean, std, params.resize), size, skip_bad=skip) if test else None,
        test_labels=[s.label for s in test],
        test_ids=[str(s.path) for s in test],
    )


def load_problem(s: Sample) -> str:
    """Why a file failed to load during the run (checked again, fully), for the skipped list."""
    problem = image_problem(s.path, "decode") or "failed to load"
    return f"{problem} (found while loading; another image stood in)"
