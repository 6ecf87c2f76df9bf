"""The ``synthetic-fundus`` dataset: generate (in parallel), cache on disk, wrap as a bundle."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from qsight.data.base import DataBundle, DataContext
from qsight.data.datasets import ArrayDataset
from qsight.data.params import DR_GRADE_NAMES, SyntheticFundusParams
from qsight.data.synthetic import GENERATOR_VERSION, generate_split, quota_labels
from qsight.data.transforms import eval_transform, train_transform
from qsight.runs.layout import atomic_writer

_CHUNK = 128  # images per worker task
_PARALLEL_MIN_PIXELS = 600 * 128 * 128  # below this, starting processes costs more than it saves


@dataclass(frozen=True)
class SyntheticArrays:
    """Generated images (uint8 NHWC), class indices, and validation lesion masks (bool NHW)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    val_masks: np.ndarray


def cache_key(params: SyntheticFundusParams, seed: int) -> str:
    """Hash of everything that changes the generated pixels (and the generator version)."""
    spec = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": params.image_size,
        "train": params.train_size,
        "val": params.val_size,
        "grades": list(params.grades),
        "balance": [round(p, 9) for p in params.balance()],
        "difficulty": round(params.difficulty, 9),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def test_cache_key(params: SyntheticFundusParams, seed: int) -> str:
    """Cache key of the test split: apart from train/validation, so adding one leaves their cache alone."""
    spec = {"of": cache_key(params, seed), "test": params.test_size}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def _chunk(args: tuple[list[int], int, tuple[int, ...], int, str, int, float]) -> tuple[np.ndarray, np.ndarray]:
    labels, start, grades, seed, split, size, difficulty = args
    return generate_split(labels, grades, seed, split, size, difficulty, start=start)


def render_split(
    labels: np.ndarray, grades: tuple[int, ...], seed: int, split: str, size: int, difficulty: float, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """``generate_split`` over ``workers`` processes (identical output: each image has its own RNG)."""
    n = len(labels)
    if workers <= 1 or n * size * size < _PARALLEL_MIN_PIXELS:
        return generate_split(labels.tolist(), grades, seed, split, size, difficulty)
    tasks = [(labels[i : i + _CHUNK].tolist(), i, grades, seed, split, size, difficulty) for i in range(0, n, _CHUNK)]
    # fork on Linux: workers run numpy only and need not re-import the caller's __main__
    ctx = get_context("fork" if sys.platform == "linux" else "spawn")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            parts = list(pool.map(_chunk, tasks))
    except (BrokenProcessPool, OSError):
        return generate_split(labels.tolist(), grades, seed, split, size, difficulty)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def default_workers() -> int:
    """Processes to generate with: the CPUs this process may use, at most 8."""
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))


def synthetic_arrays(params: SyntheticFundusParams, seed: int, cache_dir: Path | None) -> SyntheticArrays:
    """The generated set for ``params`` and ``seed``, read from ``cache_dir`` when cached there."""
    path = None if cache_dir is None else cache_dir / "synthetic-fundus" / f"{cache_key(params, seed)}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                return SyntheticArrays(
                    z["train_images"],
                    z["train_labels"],
                    z["val_images"],
                    z["val_labels"],
                    np.unpackbits(z["val_masks"], axis=-1, count=params.image_size).astype(bool),
                )
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache entry: regenerate and overwrite it
    workers = params.workers or default_workers()
    balance, size, d = params.balance(), params.image_size, params.difficulty
    train_labels = quota_labels(params.train_size, balance, seed, "train")
    val_labels = quota_labels(params.val_size, balance, seed, "val")
    train_images, _ = render_split(train_labels, params.grades, seed, "train", size, d, workers)
    val_images, val_masks = render_split(val_labels, params.grades, seed, "val", size, d, workers)
    arrays = SyntheticArrays(train_images, train_labels, val_images, val_labels, val_masks)
    if path is not None:
        _save(path, arrays)
    return arrays


def synthetic_test_arrays(
    params: SyntheticFundusParams, seed: int, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Test images (uint8 NHWC) and class indices, from the split's own seed streams; None without one.

    Train and validation arrays do not depend on ``test_size`` (nor on this function).
    """
    if params.test_size == 0:
        return None
    path = None if cache_dir is None else cache_dir / "synthetic-fundus" / f"{test_cache_key(params, seed)}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                return z["test_images"], z["test_labels"]
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache entry: regenerate and overwrite it
    labels = quota_labels(params.test_size, params.balance(), seed, "test")
    workers = params.workers or default_workers()
    images, _ = render_split(labels, params.grades, seed, "test", params.image_size, params.difficulty, workers)
    if path is not None:
        with atomic_writer(path, "wb") as fh:
            np.savez(fh, test_images=images, test_labels=labels)
    return images, labels


def _save(path: Path, a: SyntheticArrays) -> None:
    with atomic_writer(path, "wb") as fh:  # concurrent runs never read a half-written file
        np.savez(
            fh,
            train_images=a.train_images,
            train_labels=a.train_labels,
            val_images=a.val_images,
            val_labels=a.val_labels,
            val_masks=np.packbits(a.val_masks, axis=-1),
        )


def synthetic_fundus_dataset(params: SyntheticFundusParams, ctx: DataContext) -> DataBundle:
    """Build the bundle from the (cached) generated arrays."""
    seed = ctx.seed + params.seed
    a = synthetic_arrays(params, seed, ctx.cache_dir)
    mean, std = ctx.mean, ctx.std
    size = params.image_size
    train_tf = train_transform(params.augment, size, mean, std, resize=None)
    eval_tf = eval_transform(size, mean, std, resize=None)
    train_labels = a.train_labels.tolist()
    val_labels = a.val_labels.tolist()
    test = synthetic_test_arrays(params, seed, ctx.cache_dir)
    test_labels = [] if test is None else test[1].tolist()

    def display_image(i: int) -> np.ndarray:
        out: np.ndarray = a.val_images[i].copy()
        return out

    def lesion_mask(i: int) -> np.ndarray:
        out: np.ndarray = a.val_masks[i].copy()
        return out

    return DataBundle(
        class_names=tuple(DR_GRADE_NAMES[g] for g in params.grades),
        train=ArrayDataset(a.train_images, train_labels, train_tf),
        train_plain=ArrayDataset(a.train_images, train_labels, eval_tf),
        val=ArrayDataset(a.val_images, val_labels, eval_tf),
        train_labels=train_labels,
        val_labels=val_labels,
        val_ids=[f"synthetic-val-{i:05d}" for i in range(len(val_labels))],
        display_image=display_image,
        lesion_mask=lesion_mask,
        mean=mean,
        std=std,
        weighted_sampler=params.weighted_sampler,
        test=None if test is None else ArrayDataset(test[0], test_labels, eval_tf),
        test_labels=test_labels,
        test_ids=[f"synthetic-test-{i:05d}" for i in range(len(test_labels))],
    )
