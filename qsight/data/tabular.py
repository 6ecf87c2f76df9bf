"""The ``csv`` dataset: an image folder plus a CSV of labels (APTOS 2019, EyePACS, ...).

Rows are numbered as lines of the file (the header is row 1), so a message's
row number is the line to look at.

The classes are declared, never guessed from the labels present: ``class_names``
(labels are names, or indices into it), else ``num_classes`` (labels 0..n-1),
else, for integer labels, the five DR grades 0-4 of APTOS and EyePACS. String
labels without either take the sorted distinct labels as classes. A label
outside the declared classes is a bad row (exit 2 naming it, or skipped and
counted under ``on_bad_image = "skip"``), never a new class.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qsight.data.base import DataBundle, DataContext
from qsight.data.files import (
    check_samples,
    drop_duplicates,
    file_bundle,
    keep_or_raise,
    require_all_classes,
    require_dir,
    split_samples,
)
from qsight.data.images import Sample
from qsight.data.params import DR_GRADES, CsvParams
from qsight.data.splits import shared_groups
from qsight.errors import DataError


@dataclass(frozen=True)
class Row:
    """One CSV row: the image it names, its raw label and where it was read."""

    path: Path
    label: str
    ref: str
    group: str = ""  # the group_column value (e.g. a patient id), when one is named


def read_rows(root: Path, csv_name: str, image_dir: str, params: CsvParams, skipped: list[str]) -> list[Row]:
    """The rows of ``root/csv_name``, each resolved to an image path under ``root/image_dir``."""
    path = root / csv_name
    if not path.is_file():
        raise DataError(f"labels CSV {path} not found")
    folder = require_dir(root / image_dir, "image folder") if image_dir else root
    rows: list[Row] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            for col in (params.id_column, params.label_column, params.group_column):
                if col is not None and col not in columns:
                    raise DataError(f"{csv_name}: no column {col!r} (columns: {', '.join(columns) or 'none'})")
            for rec in reader:
                ref = f"{csv_name} row {reader.line_num}"
                ident = (rec.get(params.id_column) or "").strip()
                label = (rec.get(params.label_column) or "").strip()
                if not ident or not label:
                    problem = f"{ref}: empty {params.id_column!r} or {params.label_column!r}"
                    keep_or_raise(problem, params.on_bad_image, skipped)
                    continue
                name = ident
                if params.extension and not ident.lower().endswith(params.extension.lower()):
                    name += params.extension
                group = (rec.get(params.group_column) or "").strip() if params.group_column else ""
                if params.group_column and not group:
                    keep_or_raise(f"{ref}: empty {params.group_column!r}", params.on_bad_image, skipped)
                    continue
                rows.append(Row(folder / name, label, ref, group))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_name}: not a readable CSV ({exc})") from exc
    if not rows:
        raise DataError(f"{csv_name}: no usable rows")
    return rows


def _is_index(label: str) -> bool:
    return label.isdigit()


def label_names(labels: Sequence[str], params: CsvParams) -> tuple[str, ...]:
    """The declared class names (see the module docstring)."""
    if params.class_names is not None:
        return tuple(params.class_names)
    if params.num_classes is not None:
        return tuple(str(i) for i in range(params.num_classes))
    numeric = sum(1 for x in labels if _is_index(x))
    if numeric * 2 > len(labels):  # mostly integers: the rest are bad rows
        return tuple(str(i) for i in range(DR_GRADES))
    return tuple(sorted(set(labels)))


def _classes_hint(params: CsvParams) -> str:
    if params.class_names is None and params.num_classes is None:
        grades = f"{DR_GRADES} DR grades 0-{DR_GRADES - 1}"
        return f" (integer labels default to the {grades}: set num_classes or class_names)"
    return ""


def _listed(names: Sequence[str], most: int = 10) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def to_samples(rows: Sequence[Row], names: Sequence[str], params: CsvParams, skipped: list[str]) -> list[Sample]:
    """Rows with a label in ``names`` (by name, or by index when integer); bad labels raise or skip."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for r in rows:
        if r.label in index:
            label = index[r.label]
        elif _is_index(r.label) and int(r.label) < len(names):
            label = int(r.label)
        else:
            problem = (
                f"{r.ref}: label {r.label!r} is not one of the {len(names)} classes ({_listed(names)})"
                + _classes_hint(params)
            )
            keep_or_raise(problem, params.on_bad_image, skipped)
            continue
        out.append(Sample(r.path, label, r.ref))
    return out


def csv_dataset(params: CsvParams, ctx: DataContext) -> DataBundle:
    """Build the bundle: read and check the CSV(s), map labels, split off what no explicit CSV gives."""
    root = require_dir(Path(params.root).expanduser(), "dataset root")
    skipped: list[str] = []
    rows = read_rows(root, params.csv, params.image_dir, params, skipped)
    val_rows = _optional_rows(root, params.val_csv, params.val_image_dir, params, skipped)
    test_rows = _optional_rows(root, params.test_csv, params.test_image_dir, params, skipped)
    names = label_names([r.label for r in rows + val_rows + test_rows], params)
    group_of = {r.ref: r.group for r in rows + val_rows + test_rows}
    listed = to_samples(rows, names, params, skipped)
    val_listed = to_samples(val_rows, names, params, skipped)
    listed, val_listed = drop_duplicates(listed, val_listed, params, root, skipped)
    samples = check_samples(listed, params, root, skipped)
    hint = _classes_hint(params)
    val: list[Sample] = []
    if val_rows:
        val = check_samples(val_listed, params, root, skipped)
        if not val:
            raise DataError(f"{params.val_csv}: no usable validation images")
    test = _explicit(test_rows, params.test_csv, "test", names, params, root, skipped)
    if not val_rows:
        require_all_classes(samples, names, params.csv, hint)
    groups = [group_of[s.ref] for s in samples] if params.group_column else None
    train, split_val, split_test = split_samples(
        samples, params, ctx.seed, val=not val_rows, test=not test_rows, groups=groups
    )
    val, test = val or split_val, test or split_test
    require_all_classes(train, names, f"{params.csv} (training split)", hint)
    if params.group_column:
        _require_disjoint_groups(params.group_column, [[group_of[s.ref] for s in part] for part in (train, val, test)])
    return file_bundle(train, val, names, params, ctx, skipped, root, test)


def _optional_rows(root: Path, csv_name: str | None, image_dir: str | None, params: CsvParams,
                   skipped: list[str]) -> list[Row]:
    if csv_name is None:
        return []
    return read_rows(root, csv_name, image_dir or params.image_dir, params, skipped)


def _explicit(rows: Sequence[Row], csv_name: str | None, what: str, names: Sequence[str], params: CsvParams,
              root: Path, skipped: list[str]) -> list[Sample]:
    """The checked samples of an explicit validation or test CSV (none when it is not given)."""
    if not rows:
        return []
    samples = check_samples(to_samples(rows, names, params, skipped), params, root, skipped)
    if not samples:
        raise DataError(f"{csv_name}: no usable {what} images")
    return samples


def _require_disjoint_groups(column: str, parts: Sequence[Sequence[str]]) -> None:
    shared = shared_groups(*parts)
    if shared:
        listed = ", ".join(repr(g) for g in shared[:5]) + (" ..." if len(shared) > 5 else "")
        raise DataError(f"{column!r}: {len(shared)} group(s) in more than one of train/validation/test: {listed}")
