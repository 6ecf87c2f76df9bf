"""The synthetic fundus set: determinism, pinned pixels, class balance, cache, bundle contract."""

from __future__ import annotations

import hashlib
from collections.abc import Sized
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from qsight.components import DATASETS
from qsight.data import DataContext, SyntheticFundusParams
from qsight.data import synthetic_set as sset
from qsight.data.synthetic import GENERATOR_VERSION, generate_split, image_rng, quota_labels, render_fundus
from tests.helpers import heavy_imports

SMALL = {"image_size": 48, "train_size": 40, "val_size": 20}

# sha256 of render_fundus(image_rng(7, "train", grade), grade, 64) pixels, per grade. These change only
# with GENERATOR_VERSION: a change in the generator must bump the version and update these on purpose.
PINNED_VERSION = 1
PINNED = {
    0: "3106065b13a4bfa7a0d26c276e72338104c667e56121b745a67a9021843ee881",
    1: "85b53d7074f28011f0b6cbfa3ec3c9371ccbf8ec3742b3a25c6539f7b889a30d",
    2: "afb25946f667d1d24a0f03d8ff46f9cd1f61efbb3ec5a1b60d7158d8b490500b",
    3: "867428b53830fd5cea3d8da21ff2fd6be592814549e846d3c00a50d0771d0d93",
    4: "94be826c3e29ece23c0c1dec7bb6c64862214aedd109db483c9521c7b41d1bc1",
}


def _pixels_sha(grade: int) -> str:
    img, _ = render_fundus(image_rng(7, "train", grade), grade, 64, 1.0)
    return hashlib.sha256(img.tobytes()).hexdigest()


@pytest.mark.parametrize("grade", sorted(PINNED))
def test_pinned_checksums(grade: int) -> None:
    assert GENERATOR_VERSION == PINNED_VERSION, "generator version changed: update PINNED on purpose"
    assert _pixels_sha(grade) == PINNED[grade]


def test_same_params_same_arrays_and_seed_changes_them() -> None:
    p = SyntheticFundusParams(**SMALL)
    a = sset.synthetic_arrays(p, 3, None)
    b = sset.synthetic_arrays(p, 3, None)
    c = sset.synthetic_arrays(p, 4, None)
    for name in ("train_images", "train_labels", "val_images", "val_labels", "val_masks"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.train_images, c.train_images)
    assert not np.array_equal(a.val_images, b.train_images[: len(a.val_images)])  # splits differ
    assert a.train_images.dtype == np.uint8 and a.train_images.shape == (40, 48, 48, 3)
    assert a.val_masks.dtype == bool and a.val_masks.shape == (20, 48, 48)


def test_chunks_and_parallel_workers_match_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = np.array([0, 1, 2, 3, 4, 2, 0, 4])
    whole, masks = generate_split(labels.tolist(), (0, 1, 2, 3, 4), 5, "val", 32, 1.0)
    tail, _ = generate_split(labels[5:].tolist(), (0, 1, 2, 3, 4), 5, "val", 32, 1.0, start=5)
    np.testing.assert_array_equal(whole[5:], tail)
    monkeypatch.setattr(sset, "_PARALLEL_MIN_PIXELS", 0)
    monkeypatch.setattr(sset, "_CHUNK", 3)
    par, par_masks = sset.render_split(labels, (0, 1, 2, 3, 4), 5, "val", 32, 1.0, workers=2)
    np.testing.assert_array_equal(whole, par)
    np.testing.assert_array_equal(masks, par_masks)


def test_quota_labels_follow_balance_exactly() -> None:
    balance = (0.49, 0.10, 0.27, 0.05, 0.08)
    labels = quota_labels(1000, balance, 0, "train")
    counts = np.bincount(labels, minlength=5)
    assert counts.sum() == 1000
    np.testing.assert_allclose(counts / 1000, np.array(balance) / sum(balance), atol=1.5 / 1000)
    assert not np.array_equal(labels, np.sort(labels))  # shuffled


def test_default_balance_is_aptos_like_and_configurable() -> None:
    p = SyntheticFundusParams(**SMALL)
    assert p.balance()[0] == pytest.approx(0.49 / 0.99)
    q = SyntheticFundusParams(**SMALL, grades=(0, 2, 4), class_balance=(1, 1, 2))
    assert q.balance() == pytest.approx((0.25, 0.25, 0.5))
    a = sset.synthetic_arrays(q, 1, None)
    assert np.bincount(a.train_labels, minlength=3).tolist() == [10, 10, 20]


@pytest.mark.parametrize(
    "bad",
    [
        {"grades": (0, 0, 1)},
        {"grades": (0, 5)},
        {"grades": (2, 1)},
        {"class_balance": (0.5, 0.5)},
        {"class_balance": (-1, 1, 1, 1, 1)},
        {"image_size": 8},
        {"colour": 1},
    ],
)
def test_bad_params_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SyntheticFundusParams(**bad)  # type: ignore[arg-type]


def test_lesion_masks_follow_grade() -> None:
    areas = {}
    for grade in range(5):
        masks = [render_fundus(image_rng(11, "val", i), grade, 64, 1.0)[1] for i in range(4)]
        areas[grade] = float(np.mean([m.sum() for m in masks]))
    assert areas[0] == 0.0  # distractors are not lesions
    assert 0 < areas[1] < areas[2] < areas[3]
    assert areas[4] > areas[1]


def test_cache_is_used_keyed_and_repaired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = SyntheticFundusParams(**SMALL)
    first = sset.synthetic_arrays(p, 0, tmp_path)
    files = list((tmp_path / "synthetic-fundus").glob("*.npz"))
    assert len(files) == 1

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated instead of reading the cache")

    monkeypatch.setattr(sset, "render_split", boom)
    again = sset.synthetic_arrays(p, 0, tmp_path)
    np.testing.assert_array_equal(first.val_images, again.val_images)
    np.testing.assert_array_equal(first.val_masks, again.val_masks)
    monkeypatch.undo()

    assert sset.cache_key(p, 0) == sset.cache_key(p.model_copy(update={"weighted_sampler": True}), 0)
    assert sset.cache_key(p, 0) != sset.cache_key(p, 1)
    assert sset.cache_key(p, 0) != sset.cache_key(p.model_copy(update={"difficulty": 0.5}), 0)
    files[0].write_bytes(b"not an npz")
    repaired = sset.synthetic_arrays(p, 0, tmp_path)
    np.testing.assert_array_equal(first.train_images, repaired.train_images)


def test_bundle_contract(tmp_path: Path) -> None:
    entry = DATASETS.get("synthetic-fundus")
    params = SyntheticFundusParams(**SMALL, grades=(0, 3, 4), weighted_sampler=True)
    b = entry.build(params, DataContext(seed=2, cache_dir=tmp_path))
    assert b.class_names == ("no DR", "severe", "proliferative") and b.num_classes == 3
    sizes = [len(cast(Sized, d)) for d in (b.train, b.train_plain, b.val)]
    assert sizes == [40, 40, 20] and len(b.train_labels) == 40
    assert len(b.val_labels) == len(b.val_ids) == 20
    assert b.weighted_sampler
    x, y = b.val[0]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and y == b.val_labels[0]
    torch.testing.assert_close(b.val[0][0], b.val[0][0])
    torch.testing.assert_close(b.train_plain[1][0], b.train_plain[1][0])
    shown = b.display_image(0)
    assert shown.dtype == np.uint8 and shown.shape == (48, 48, 3)
    # the normalised validation tensor is exactly the displayed image, normalised
    mean = torch.tensor(b.mean)[:, None, None]
    std = torch.tensor(b.std)[:, None, None]
    torch.testing.assert_close(x, (torch.from_numpy(shown).permute(2, 0, 1) / 255.0 - mean) / std)
    assert b.lesion_mask is not None
    m = b.lesion_mask(0)
    assert m.dtype == bool and m.shape == (48, 48)
    torch.manual_seed(0)
    aug = torch.stack([b.train[1][0] for _ in range(3)])
    assert not torch.equal(aug[0], aug[1])  # training items are augmented


def test_import_is_light() -> None:
    assert heavy_imports("qsight.data", ("torch", "torchvision", "numpy", "PIL")) == []
