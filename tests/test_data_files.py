"""The csv and image-folder datasets on small on-disk layouts written here, and their bad data."""

from __future__ import annotations

from collections.abc import Callable, Sized
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from PIL import Image

from qsight.components import DATASETS
from qsight.data import CsvParams, DataContext, ImageFolderParams
from qsight.data.base import DataBundle
from qsight.errors import DataError

SIZE = 24


def _n(ds: object) -> int:
    return len(cast(Sized, ds))


def _write_image(path: Path, value: int, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    arr = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)  # not square: exercises the fit step
    Image.fromarray(arr).save(path, format=fmt)


def _build(kind: str, tmp: Path, **params: Any) -> DataBundle:
    entry = DATASETS.get(kind)
    p = entry.params.model_validate({"image_size": SIZE, **params})
    return entry.build(p, DataContext(seed=0, cache_dir=tmp / "cache"))


def _aptos(root: Path, labels: list[int]) -> None:
    lines = ["id_code,diagnosis"]
    for i, y in enumerate(labels):
        _write_image(root / "train_images" / f"img{i:03d}.png", i)
        lines.append(f"img{i:03d},{y}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")


def _folders(root: Path, counts: dict[str, int], ext: str = ".png") -> None:
    k = 0
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            _write_image(root / name / f"f{k:03d}{ext}", k)
            k += 1


APTOS_LABELS = [0] * 10 + [1] * 5 + [2] * 5 + [3] * 5 + [4] * 5


def test_aptos_layout_loads_with_stratified_split(tmp_path: Path) -> None:
    _aptos(tmp_path, APTOS_LABELS)
    b = _build("csv", tmp_path, root=str(tmp_path), val_fraction=0.2)
    assert b.class_names == ("0", "1", "2", "3", "4")
    assert np.bincount(b.val_labels, minlength=5).tolist() == [2, 1, 1, 1, 1]
    assert _n(b.train) + _n(b.val) == 30
    assert not set(b.val_ids) & {str(s.path) for s in b.train.samples}  # type: ignore[attr-defined]
    x, y = b.train[0]
    assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32 and isinstance(y, int)
    torch.testing.assert_close(b.val[0][0], b.val[0][0])
    shown = b.display_image(0)
    assert shown.shape == (SIZE, SIZE, 3) and shown.dtype == np.uint8
    assert b.lesion_mask is None and b.skipped == []
    again = _build("csv", tmp_path, root=str(tmp_path), val_fraction=0.2)
    assert list(again.val_ids) == list(b.val_ids)  # seeded split
    other = _build("csv", tmp_path, root=str(tmp_path), val_fraction=0.2, split_seed=1)
    assert list(other.val_ids) != list(b.val_ids)


def test_eyepacs_layout_with_names_and_validation_csv(tmp_path: Path) -> None:
    rows = ["image,level"]
    val_rows = ["image,level"]
    for i in range(9):
        _write_image(tmp_path / "train" / f"{i}_left.jpeg", i, "JPEG")
        (rows if i < 6 else val_rows).append(f"{i}_left,{i % 3}")
    (tmp_path / "trainLabels.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "val.csv").write_text("\n".join(val_rows) + "\n")
    b = _build(
        "csv",
        tmp_path,
        root=str(tmp_path),
        csv="trainLabels.csv",
        image_dir="train",
        id_column="image",
        label_column="level",
        extension=".jpeg",
        class_names=("none", "mild", "moderate"),
        val_csv="val.csv",
    )
    assert b.class_names == ("none", "mild", "moderate") and b.num_classes == 3
    assert _n(b.train) == 6 and list(b.val_labels) == [0, 1, 2]
    assert b.val[2][0].shape == (3, SIZE, SIZE)


def test_string_labels_name_the_classes(tmp_path: Path) -> None:
    lines = ["file,grade"]
    for i in range(8):
        _write_image(tmp_path / "imgs" / f"a{i}.png", i)
        lines.append(f"a{i}.png,{'healthy' if i % 2 else 'dr'}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    b = _build(
        "csv",
        tmp_path,
        root=str(tmp_path),
        csv="labels.csv",
        image_dir="imgs",
        id_column="file",
        label_column="grade",
        val_fraction=0.25,
    )
    assert b.class_names == ("dr", "healthy")
    assert sorted(b.val_labels) == [0, 1]


def test_image_folder_sorted_explicit_and_val_dir(tmp_path: Path) -> None:
    _folders(tmp_path / "data", {"severe": 4, "none": 4, "mild": 4})
    b = _build("image-folder", tmp_path, root=str(tmp_path / "data"), val_fraction=0.25)
    assert b.class_names == ("mild", "none", "severe")
    assert np.bincount(b.val_labels).tolist() == [1, 1, 1]
    c = _build("image-folder", tmp_path, root=str(tmp_path / "data"), classes=("none", "mild", "severe"))
    assert c.class_names == ("none", "mild", "severe")
    none_val = [i for i, y in enumerate(c.val_labels) if y == 0]
    assert all("/none/" in c.val_ids[i] for i in none_val)
    _folders(tmp_path / "data" / "val", {"severe": 1, "none": 1, "mild": 2})
    d = _build("image-folder", tmp_path, root=str(tmp_path / "data"), val_dir="val")
    assert d.class_names == ("mild", "none", "severe")  # the validation folder is not a class
    assert _n(d.train) == 12 and sorted(d.val_labels) == [0, 0, 1, 2]


def _message(fn: Callable[[], object]) -> str:
    with pytest.raises(DataError) as info:
        fn()
    return str(info.value)


def test_missing_root_csv_and_column(tmp_path: Path) -> None:
    assert "not found" in _message(lambda: _build("csv", tmp_path, root=str(tmp_path / "nope")))
    assert "not found" in _message(lambda: _build("image-folder", tmp_path, root=str(tmp_path / "nope")))
    _aptos(tmp_path, APTOS_LABELS)
    assert "missing.csv" in _message(lambda: _build("csv", tmp_path, root=str(tmp_path), csv="missing.csv"))
    msg = _message(lambda: _build("csv", tmp_path, root=str(tmp_path), label_column="level"))
    assert "'level'" in msg and "diagnosis" in msg


def _break_aptos(root: Path) -> None:
    """Rows 2..4 of train.csv (img000..img002) get: a missing file, a truncated PNG, a non-image."""
    (root / "train_images" / "img000.png").unlink()
    data = (root / "train_images" / "img001.png").read_bytes()
    (root / "train_images" / "img001.png").write_bytes(data[: len(data) // 2])
    (root / "train_images" / "img002.png").write_text("hello")


def test_bad_images_raise_naming_row_and_file(tmp_path: Path) -> None:
    _aptos(tmp_path, APTOS_LABELS)
    _break_aptos(tmp_path)
    msg = _message(lambda: _build("csv", tmp_path, root=str(tmp_path)))
    assert msg.startswith("train.csv row 2: image train_images/img000.png not found")
    (tmp_path / "train_images" / "img000.png").write_bytes(b"")
    _write_image(tmp_path / "train_images" / "img000.png", 0)
    msg = _message(lambda: _build("csv", tmp_path, root=str(tmp_path)))
    assert msg.startswith("train.csv row 3: image train_images/img001.png") and "unreadable" in msg


def test_skip_mode_skips_and_lists_bad_items(tmp_path: Path) -> None:
    _aptos(tmp_path, [*APTOS_LABELS, 7])  # the last row's label is outside the classes
    _break_aptos(tmp_path)
    b = _build("csv", tmp_path, root=str(tmp_path), class_names=("a", "b", "c", "d", "e"), on_bad_image="skip")
    assert len(b.skipped) == 4
    assert {s.split(":")[0] for s in b.skipped} == {f"train.csv row {r}" for r in (2, 3, 4, 32)}
    assert any(s.startswith("train.csv row 32: label '7'") for s in b.skipped)
    assert _n(b.train) + _n(b.val) == 27


def test_label_outside_class_list_raises(tmp_path: Path) -> None:
    _aptos(tmp_path, [*APTOS_LABELS, 5])
    msg = _message(lambda: _build("csv", tmp_path, root=str(tmp_path), class_names=("a", "b", "c", "d", "e")))
    assert msg.startswith("train.csv row 32: label '5'")


def test_truncated_jpeg_is_caught_by_the_header_check(tmp_path: Path) -> None:
    _folders(tmp_path, {"a": 3, "b": 3}, ext=".jpg")
    victim = tmp_path / "b" / "f004.jpg"
    _write_image(victim, 4, "JPEG")
    victim.write_bytes(victim.read_bytes()[:-200])
    msg = _message(lambda: _build("image-folder", tmp_path, root=str(tmp_path)))
    assert "b/f004.jpg" in msg and "truncated" in msg
    b = _build("image-folder", tmp_path, root=str(tmp_path), on_bad_image="skip")
    assert len(b.skipped) == 1 and _n(b.train) + _n(b.val) == 5


def test_empty_class_raises(tmp_path: Path) -> None:
    _folders(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "c").mkdir()
    assert "'c'" in _message(lambda: _build("image-folder", tmp_path, root=str(tmp_path)))
    _aptos(tmp_path / "t", [0, 0, 0, 2, 2, 2])
    msg = _message(lambda: _build("csv", tmp_path, root=str(tmp_path / "t"), class_names=("x", "y", "z")))
    assert "'y'" in msg


def test_registered_params_validate() -> None:
    assert CsvParams(root="r").id_column == "id_code"
    assert ImageFolderParams(root="r").classes is None
    with pytest.raises(ValueError):
        ImageFolderParams(root="r", classes=("a", "b"), class_names=("x", "y", "z"))
