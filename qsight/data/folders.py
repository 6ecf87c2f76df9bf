"""The ``image-folder`` dataset: one sub-folder of images per class."""

from __future__ import annotations

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


def class_folders(root: Path, classes: tuple[str, ...] | None, exclude: str | None = None) -> tuple[str, ...]:
    """``classes``, each checked to exist, or every sub-folder of ``root`` (hidden ones and ``exclude``
    aside), sorted."""
    if classes is not None:
        for c in classes:
            require_dir(root / c, f"class folder for {c!r}:")
        return classes
    found = tuple(
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != exclude)
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
    folders = class_folders(root, params.classes, exclude=params.val_dir)
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
    if val_root is not None:
        train = samples
        val = check_samples(val_listed, params, root, skipped)
        if not val:
            raise DataError(f"{val_root}: no usable validation images")
    else:
        train, val = split_samples(samples, params, ctx.seed)
    return file_bundle(train, val, names, params, ctx, skipped, root)
