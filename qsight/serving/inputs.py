"""What `predict` reads: image files, folders of images (recursive), or a labels CSV of a dataset layout."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from qsight.config.spec import ExperimentSpec
from qsight.data.params import CsvParams, ImageFolderParams
from qsight.errors import BadInputError

#: Suffixes of the image files found in folders (those of the image-folder dataset).
IMAGE_SUFFIXES = frozenset(s.lower() for s in ImageFolderParams.model_fields["extensions"].default)
#: Columns that name an image in a CSV, tried in order after the run's own id column.
PATH_COLUMNS = ("path", "file", "image_path")


def collect_inputs(items: Sequence[str | Path], spec: ExperimentSpec | None = None) -> list[Path]:
    """Every image named by `items`, in order: files as given, folders searched recursively (sorted),
    CSVs read row by row. A missing path or an unusable CSV is bad input; a listed image that is
    missing or unreadable is not (its prediction row carries the error)."""
    if not items:
        raise BadInputError("no input given: name image files, folders or a CSV")
    found: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix.lower() == ".csv" and path.is_file():
            found += csv_images(path, csv_layout(spec))
        elif path.exists() or path.is_symlink():
            found.append(path)
        else:
            raise BadInputError(f"{item}: no such file or folder")
    if not found:
        raise BadInputError(f"no images found in {', '.join(map(str, items))}")
    return found


def csv_layout(spec: ExperimentSpec | None) -> CsvParams:
    """How a CSV names its images: the run's own layout when it trained on a CSV, else APTOS 2019's."""
    if spec is not None and isinstance(spec.data, CsvParams):
        return spec.data
    return CsvParams(root=".")


def csv_images(path: Path, layout: CsvParams) -> list[Path]:
    """The images a CSV lists: a path column (relative to the CSV's folder), or the layout's id column
    resolved as ``<image_dir>/<id><extension>`` beside the CSV (or in its folder when that is absent)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            rows = [dict(r) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"{path}: not a readable CSV ({exc})") from None
    column = next((c for c in (*PATH_COLUMNS, layout.id_column) if c in columns), None)
    if column is None:
        wanted = ", ".join(repr(c) for c in (*PATH_COLUMNS, layout.id_column))
        raise BadInputError(f"{path}: no column naming images ({wanted}; found {', '.join(columns) or 'none'})")
    folder = path.parent
    if column == layout.id_column and layout.image_dir and (folder / layout.image_dir).is_dir():
        folder = folder / layout.image_dir
    out = []
    for row in rows:
        name = (row.get(column) or "").strip()
        if not name:
            continue
        if column == layout.id_column and layout.extension and not name.lower().endswith(layout.extension.lower()):
            name += layout.extension
        out.append(folder / name if not Path(name).is_absolute() else Path(name))
    return out
