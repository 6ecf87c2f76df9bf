"""The ``image-folder`` dataset: one sub-folder of images per class."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from qsight.data.base import DataBundle, DataContext
from qsight.data.files import (
    check_samples,
    drop_duplicates,
    file_bundle,
    require_all_classes,
    require_dir,
    split_samples,
)
from qsight.data.images import Sample
from qsight.data.params import ImageFolderParams
from qsight.errors import DataError


def class_folders(root: Path, classes: tuple[str, ...] | None, exclude: Collection[str | None] = ()) -> tuple[str, ...]:
    """``classes``, each checked to exist, or every sub-folder of ``root`` (hidden ones and those in
    ``exclude`` aside), sorted."""
    if classes is not None:
        for c in classes:
            require_dir(root / c, f"class folder for {c!r}:")
        return classes
    found = tuple(
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in exclude)
    )
    if len(found) < 2:
        raise DataError(f"{root}: needs at least two class sub-folders, found {len(found)}")
    return found


def folder_samples(root: Path, folders: tuple[str, ...], extensions: tuple[str, ...]) -> list[Sample]:
    """Every image file (by suffix) in each class folder, in sorted order; label = folder index.

    A link to a missing file is listed too, so that it is reported (or skipped and counted).
    """
    suffixes = {e.lower() for e in extensions}
    out = []
    for label, name in enumerate(folders):
        folder = require_dir(root / name, f"class folder for {name!r}:")
        files = sorted(
            p for p in folder.iterdir() if (p.is_file() or p.is_symlink()) and p.suffix.lower() in suffixes
        )
        out += [Sample(p, label, f"{name}/{p.name}") for p in files]
    return out


def image_folder_dataset(params: ImageFolderParams, ctx: DataContext) -> DataBundle:
    """Build the bundle: class folders, checked images, split or explicit validation folder."""
    root = require_dir(Path(params.root).expanduser(), "dataset root")
    folders = class_folders(root, params.classes, exclude=(params.val_dir, params.test_dir))
    names = params.class_names or folders
    if len(names) != len(folders):
        raise DataError(f"{root}: {len(folders)} class folders ({', '.join(folders)}) but {len(names)} class_names")
    skipped: list[str] = []
    listed = folder_samples(root, folders, params.extensions)
    val_root = None if params.val_dir is None else require_dir(root / params.val_dir, "validation folder")
    val_listed = [] if val_root is None else folder_samples(val_root, folders, params.extensions)
    listed, val_listed = drop_duplicates(listed, val_listed, params, root, skipped)
    samples = check_samples(listed, params, root, skipped)
    require_all_classes(samples, names, str(root))
    val: list[Sample] = []
    if val_root is not None:
        val = check_samples(val_listed, params, root, skipped)
        if not val:
            raise DataError(f"{val_root}: no usable validation images")
    test = _explicit(root, params.test_dir, "test", folders, params, skipped)
    train, split_val, split_test = split_samples(samples, params, ctx.seed, val=not val, test=not test)
    return file_bundle(train, val or split_val, names, params, ctx, skipped, root, test or split_test)


def _explicit(root: Path, folder: str | None, what: str, folders: tuple[str, ...], params: ImageFolderParams,
              skipped: list[str]) -> list[Sample]:
    """The checked images of an explicit test folder (none when it is not given)."""
    if folder is None:
        return []
    base = require_dir(root / folder, f"{what} folder")
    samples = check_samples(folder_samples(base, folders, params.extensions), params, root, skipped)
    if not samples:
        raise DataError(f"{base}: no usable {what} images")
    return samples
