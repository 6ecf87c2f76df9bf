"""Datasets: the embedded synthetic fundus set, image folders and CSV-labelled images.

Importing this package is cheap (params and registrations only); the
implementation modules, which import numpy, PIL and torch, load when a
dataset is built or a heavy name below is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsight.components import DATASETS
from qsight.data.base import IMAGENET_MEAN, IMAGENET_STD, DataBundle, DataContext
from qsight.data.params import (
    APTOS_BALANCE,
    DR_GRADE_NAMES,
    AugmentParams,
    CsvParams,
    ImageFolderParams,
    SyntheticFundusParams,
)
from qsight.lazy import lazy_getattr

if TYPE_CHECKING:
    from qsight.data.balance import class_weights, sample_weights
    from qsight.data.splits import grouped_split, holdout_split, stratified_split
    from qsight.data.synthetic import GENERATOR_VERSION, render_fundus
    from qsight.data.synthetic_set import synthetic_arrays
    from qsight.data.transforms import eval_transform, train_transform

__all__ = [
    "APTOS_BALANCE",
    "DR_GRADE_NAMES",
    "GENERATOR_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentParams",
    "CsvParams",
    "DataBundle",
    "DataContext",
    "ImageFolderParams",
    "SyntheticFundusParams",
    "class_weights",
    "eval_transform",
    "grouped_split",
    "holdout_split",
    "render_fundus",
    "sample_weights",
    "stratified_split",
    "synthetic_arrays",
    "train_transform",
]

_LAZY = {
    "class_weights": "qsight.data.balance",
    "sample_weights": "qsight.data.balance",
    "stratified_split": "qsight.data.splits",
    "grouped_split": "qsight.data.splits",
    "holdout_split": "qsight.data.splits",
    "GENERATOR_VERSION": "qsight.data.synthetic",
    "render_fundus": "qsight.data.synthetic",
    "synthetic_arrays": "qsight.data.synthetic_set",
    "eval_transform": "qsight.data.transforms",
    "train_transform": "qsight.data.transforms",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


@DATASETS.register(
    "synthetic-fundus",
    params=SyntheticFundusParams,
    summary="embedded synthetic fundus photographs with DR lesions by grade (seeded, cached)",
)
def synthetic_fundus(params: SyntheticFundusParams, ctx: DataContext) -> DataBundle:
    """Embedded synthetic fundus set."""
    from qsight.data.synthetic_set import synthetic_fundus_dataset

    return synthetic_fundus_dataset(params, ctx)


@DATASETS.register(
    "csv", params=CsvParams, summary="image folder + CSV of labels (APTOS 2019 by default; EyePACS by columns)"
)
def csv_images(params: CsvParams, ctx: DataContext) -> DataBundle:
    """Images listed in a CSV of labels."""
    from qsight.data.tabular import csv_dataset

    return csv_dataset(params, ctx)


@DATASETS.register("image-folder", params=ImageFolderParams, summary="one sub-folder of images per class")
def image_folder(params: ImageFolderParams, ctx: DataContext) -> DataBundle:
    """Images in one sub-folder per class."""
    from qsight.data.folders import image_folder_dataset

    return image_folder_dataset(params, ctx)
