"""Stratified splits and the transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qsight.data import AugmentParams
from qsight.data.splits import stratified_split
from qsight.data.transforms import eval_transform, train_transform

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_stratified_split_keeps_class_shares_and_is_seeded() -> None:
    labels = [0] * 50 + [1] * 20 + [2] * 9 + [3] * 1
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(train + val) == list(range(80)) and not set(train) & set(val)
    assert np.bincount([labels[i] for i in val], minlength=4).tolist() == [10, 4, 2, 0]
    assert stratified_split(labels, 0.2, seed=3) == (train, val)
    assert stratified_split(labels, 0.2, seed=4) != (train, val)
    _, tiny = stratified_split([0, 0, 1, 1], 0.01, seed=0)
    assert sorted(labels[i] for i in tiny) == [0, 0]  # at least one per class of two or more
    with pytest.raises(ValueError):
        stratified_split(labels, 1.0, seed=0)


def test_transforms_shape_and_augmentation_switch() -> None:
    img = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    ev = eval_transform(32, MEAN, STD, "center-crop")
    out = ev(img)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert eval_transform(32, MEAN, STD, "stretch")(img).shape == (3, 32, 32)
    off = train_transform(AugmentParams(enabled=False), 32, MEAN, STD, "center-crop")
    torch.testing.assert_close(off(img), out)
    on = train_transform(AugmentParams(vflip=0.5, hue=0.05), 32, MEAN, STD, "center-crop")
    torch.manual_seed(0)
    a, b = on(img), on(img)
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)


def test_augment_params_reject_bad_ranges() -> None:
    with pytest.raises(ValueError):
        AugmentParams(crop_scale=(0.9, 0.5))
    with pytest.raises(ValueError):
        AugmentParams(crop_ratio=(0.0, 1.0))
