"""Wrong data is refused or counted, never accepted silently (issue 12, item 5).

Every test writes real files (PNG, TIFF, CSV, links) and builds the registered
dataset components on them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import timm.data
import torch
from PIL import Image
from pydantic import ValidationError
from torch.utils.data import DataLoader

from qsight.components import DATASETS
from qsight.config.spec import validate_spec
from qsight.data import CsvParams, DataContext
from qsight.data.base import DataBundle
from qsight.errors import DataError
from registry import Params
from tests.helpers import cli, smoke_raw, summary, tiny_spec

SIZE = 16
LABELS = [0] * 6 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4  # 22 rows: rows 2..23 of train.csv


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)


def _build(kind: str, tmp: Path, *, raw: bool = False, **params: Any) -> DataBundle:
    """The dataset; with ``raw``, normalised with mean 0 and std 1 (pixel values / 255)."""
    entry = DATASETS.get(kind)
    p = entry.params.model_validate({"image_size": SIZE, "resize": "stretch", **params})
    norm = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)} if raw else {}
    return entry.build(p, DataContext(seed=0, cache_dir=tmp / "cache", **norm))


def _aptos(root: Path, labels: list[int], ids: list[str] | None = None) -> None:
    ids = ids or [f"img{i:03d}" for i in range(len(labels))]
    for i, ident in enumerate(dict.fromkeys(ids)):
        _png(root / "train_images" / f"{ident}.png", i)
    rows = [f"{ident},{y}" for ident, y in zip(ids, labels, strict=True)]
    (root / "train.csv").write_text("\n".join(["id_code,diagnosis", *rows]) + "\n")


def _message(fn: Callable[[], object]) -> str:
    with pytest.raises(DataError) as info:
        fn()
    return str(info.value)


# -- high bit depth ---------------------------------------------------------------------------------


def _png_rgb16(path: Path, value: int) -> None:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one), every channel ``value``."""
    row = b"\x00" + struct.pack(">H", value) * 3 * SIZE

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", SIZE, SIZE, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * SIZE)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_high_bit_depth_images_are_scaled_by_their_range_not_clipped(tmp_path: Path) -> None:
    """Old code: a 16-bit PNG of 30000 read as 255 (white), a float TIFF of 0.5 as 0 (black).

    Each file must give the tensor of an 8-bit image of the same brightness (117 = 30000/65535*255).
    """
    gray16 = np.full((SIZE, SIZE), 30000, dtype=np.uint16)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
    Image.fromarray(gray16).save(tmp_path / "a" / "gray16.png")
    Image.fromarray(gray16).save(tmp_path / "a" / "gray16.tif")
    Image.fromarray(np.full((SIZE, SIZE), 117, dtype=np.uint8)).save(tmp_path / "a" / "ref117.png")
    _png_rgb16(tmp_path / "b" / "rgb16.png", 30000)
    Image.fromarray(np.full((SIZE, SIZE), 0.5, dtype=np.float32)).save(tmp_path / "b" / "float.tif")
    Image.fromarray(np.full((SIZE, SIZE), 128, dtype=np.uint8)).save(tmp_path / "b" / "ref128.png")
    assert Image.open(tmp_path / "a" / "gray16.png").mode == "I;16"
    b = _build("image-folder", tmp_path, root=str(tmp_path), val_fraction=0.5)
    seen = {}
    for ds in (b.train_plain, b.val):
        for i, s in enumerate(ds.samples):  # type: ignore[attr-defined]
            seen[s.path.name] = ds[i][0]
    pairs = {"gray16.png": "ref117.png", "gray16.tif": "ref117.png", "rgb16.png": "ref117.png"}
    for name, ref in {**pairs, "float.tif": "ref128.png"}.items():
        torch.testing.assert_close(seen[name], seen[ref], msg=name)


# -- labels outside the declared classes ------------------------------------------------------------


def test_label_outside_the_five_grades_names_the_row(tmp_path: Path) -> None:
    """Old code: label 5 made a sixth class; label 7 said "class(es) '5', '6' have no usable images"."""
    _aptos(tmp_path, [*LABELS, 5])
    msg = _message(lambda: _build("csv", tmp_path, root=str(tmp_path)))
    assert msg.startswith("train.csv row 24: label '5' is not one of the 5 classes (0, 1, 2, 3, 4)")
    assert "num_classes" in msg
    _aptos(tmp_path, [*LABELS, 7])
    assert _message(lambda: _build("csv", tmp_path, root=str(tmp_path))).startswith("train.csv row 24: label '7'")
    b = _build("csv", tmp_path, root=str(tmp_path), on_bad_image="skip")
    assert b.class_names == ("0", "1", "2", "3", "4")
    assert b.skipped == [b.skipped[0]] and b.skipped[0].startswith("train.csv row 24: label '7'")
    assert len(b.train_labels) + len(b.val_labels) == len(LABELS)
    _aptos(tmp_path, [*LABELS, 5, 5])
    wide = _build("csv", tmp_path, root=str(tmp_path), num_classes=6)
    assert wide.num_classes == 6 and wide.skipped == []  # declared: label 5 belongs


def test_fewer_integer_classes_must_be_declared(tmp_path: Path) -> None:
    _aptos(tmp_path, [0, 0, 1, 1, 2, 2])
    msg = _message(lambda: _build("csv", tmp_path, root=str(tmp_path)))
    assert "'3', '4' have no usable images" in msg and "num_classes" in msg
    assert _build("csv", tmp_path, root=str(tmp_path), num_classes=3).class_names == ("0", "1", "2")
    with pytest.raises(ValidationError, match="num_classes"):
        CsvParams(root="r", class_names=("a", "b"), num_classes=3)


# -- duplicates -------------------------------------------------------------------------------------


def test_duplicate_ids_are_refused_naming_both_rows(tmp_path: Path) -> None:
    """Old code: img003 listed twice (labels 0 and 4) trained under both labels, maybe in both splits."""
    ids = [f"img{i:03d}" for i in range(len(LABELS))]
    _aptos(tmp_path, [*LABELS, 4], [*ids, "img003"])
    msg = _message(lambda: _build("csv", tmp_path, root=str(tmp_path)))
    assert msg.startswith("train.csv row 24: image train_images/img003.png repeats train.csv row 5")
    assert "labels 0 and 4" in msg
    b = _build("csv", tmp_path, root=str(tmp_path), duplicates="first")
    assert len(b.skipped) == 1 and b.skipped[0].startswith("train.csv row 24:")
    listed = [str(s.path) for s in b.train.samples] + list(b.val_ids)  # type: ignore[attr-defined]
    assert len(listed) == len(set(listed)) == len(LABELS)


def test_validation_csv_repeating_a_training_row_is_refused(tmp_path: Path) -> None:
    _aptos(tmp_path, LABELS)
    (tmp_path / "val.csv").write_text("id_code,diagnosis\nimg000,0\nimg007,1\n")
    msg = _message(lambda: _build("csv", tmp_path, root=str(tmp_path), val_csv="val.csv"))
    assert msg.startswith("val.csv row 2: image train_images/img000.png repeats train.csv row 2")


def test_one_file_linked_into_two_class_folders_is_a_duplicate(tmp_path: Path) -> None:
    for k in range(3):
        _png(tmp_path / "a" / f"a{k}.png", k)
        _png(tmp_path / "b" / f"b{k}.png", 10 + k)
    (tmp_path / "b" / "twin.png").symlink_to(tmp_path / "a" / "a1.png")
    msg = _message(lambda: _build("image-folder", tmp_path, root=str(tmp_path)))
    assert "b/twin.png" in msg and "repeats a/a1.png" in msg and "labels 0 and 1" in msg


# -- links to missing files -------------------------------------------------------------------------


def test_link_to_a_missing_file_is_reported_or_counted(tmp_path: Path) -> None:
    """Old code: the dangling link was dropped from the listing, neither an error nor counted."""
    for k in range(3):
        _png(tmp_path / "a" / f"a{k}.png", k)
        _png(tmp_path / "b" / f"b{k}.png", 10 + k)
    (tmp_path / "b" / "gone.png").symlink_to(tmp_path / "elsewhere" / "gone.png")
    msg = _message(lambda: _build("image-folder", tmp_path, root=str(tmp_path)))
    assert msg.startswith("b/gone.png: image b/gone.png is a link to a missing file")
    b = _build("image-folder", tmp_path, root=str(tmp_path), on_bad_image="skip")
    assert len(b.skipped) == 1 and "b/gone.png is a link to a missing file" in b.skipped[0]
    assert len(b.train_labels) + len(b.val_labels) == 6


# -- the skip policy at load time -------------------------------------------------------------------


def _corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_skip_policy_holds_when_images_are_not_checked_up_front(tmp_path: Path) -> None:
    """Old code: with image_check = "none" the first corrupt file stopped the run, skip or not."""
    _aptos(tmp_path, LABELS)
    for k in (1, 7):  # rows 3 and 9: classes 0 and 1
        _corrupt(tmp_path / "train_images" / f"img{k:03d}.png")
    strict = _build("csv", tmp_path, root=str(tmp_path), image_check="none", val_fraction=0.25)
    with pytest.raises(DataError, match=r"img00[17]\.png"):
        list(DataLoader(strict.train_plain, batch_size=64))
    b = _build("csv", tmp_path, root=str(tmp_path), image_check="none", on_bad_image="skip", val_fraction=0.25)
    assert b.skipped == []  # nothing known before loading
    for ds in (b.train_plain, b.val):  # worker processes find the bad files; the main process sees them
        x, y = next(iter(DataLoader(ds, batch_size=64, num_workers=2)))
        assert x.shape[0] == len(ds) and torch.isfinite(x).all()  # type: ignore[arg-type]
        assert y.tolist() == [s.label for s in ds.samples]  # type: ignore[attr-defined]  # stand-ins of the class
    found = b.skipped_images()
    assert sorted(s.split(":")[0] for s in found) == ["train.csv row 3", "train.csv row 9"]
    assert all("found while loading" in s and "train_images/img00" in s for s in found)
    val_paths = [Path(v).name for v in b.val_ids]
    for i, name in enumerate(val_paths):
        assert b.display_image(i).shape == (SIZE, SIZE, 3), name  # a bad validation file shows its stand-in


def test_a_stand_in_comes_from_another_class_when_its_own_has_none_left(tmp_path: Path) -> None:
    _aptos(tmp_path, [0, 0, 0, 1, 1, 1])
    for k in range(3):
        _corrupt(tmp_path / "train_images" / f"img{k:03d}.png")
    b = _build("csv", tmp_path, root=str(tmp_path), image_check="none", on_bad_image="skip", class_names=("x", "y"))
    first = b.train_labels.index(0)  # type: ignore[attr-defined]
    assert b.train[first][1] == 1  # the image returned is a readable one, with its own label
    assert len(b.skipped_images()) == 2  # both class-0 training files were tried
    for k in range(3, 6):
        _corrupt(tmp_path / "train_images" / f"img{k:03d}.png")
    b = _build("csv", tmp_path, root=str(tmp_path), image_check="none", on_bad_image="skip", class_names=("x", "y"))
    assert "no image of this set can be read any more" in _message(lambda: b.train[0])


# -- names of per-sample artifacts ------------------------------------------------------------------


def test_sample_names_are_unique_and_readable(tmp_path: Path) -> None:
    """Old code named Grad-CAM files by the stem alone: a/img4.png and b/img4.png wrote one file."""
    for cls in ("a", "b"):
        for k in range(2):
            _png(tmp_path / cls / f"img{k}.png", k)
            _png(tmp_path / "val" / cls / f"img{k}.png", k + 5)
    _png(tmp_path / "val" / "a" / "img0.jpg", 9)  # same stem, other suffix
    b = _build("image-folder", tmp_path, root=str(tmp_path), val_dir="val")
    names = [b.sample_name(i) for i in range(len(b.val_ids))]
    assert names == ["a__img0", "a__img0-1", "a__img1", "b__img0", "b__img1"]
    c = _build("csv", _aptos_at(tmp_path / "csv"), root=str(tmp_path / "csv"))
    assert c.sample_name(0) == Path(c.val_ids[0]).stem  # one image folder: the id alone


def _aptos_at(root: Path) -> Path:
    _aptos(root, LABELS)
    return root


# -- input normalisation from the backbone ----------------------------------------------------------


def _flat_folders(root: Path, value: int) -> None:
    for cls in ("a", "b"):
        for k in range(3):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((SIZE, SIZE, 3), value, dtype=np.uint8)).save(root / cls / f"{cls}{k}.png")


def test_normalisation_comes_from_the_backbone(tmp_path: Path) -> None:
    """Old code normalised with ImageNet's mean/std whatever the backbone (vit_tiny wants 0.5/0.5)."""
    from qsight.experiment.build import build_data
    from qsight.models import TimmBackboneParams, TinyCnnParams, backbone_normalization

    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert backbone_normalization(TinyCnnParams()) == imagenet  # the documented default
    assert backbone_normalization(TimmBackboneParams(name="resnet18")) == imagenet  # the flagship: unchanged
    vit = {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32}}
    built = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32)
    cfg = timm.data.resolve_model_data_config(built)
    assert backbone_normalization(TimmBackboneParams.model_validate(vit)) == (cfg["mean"], cfg["std"])
    assert cfg["mean"] == (0.5, 0.5, 0.5) != imagenet[0]
    _flat_folders(tmp_path / "data", 200)
    raw = smoke_raw()
    raw["data"] = {"type": "image-folder", "root": str(tmp_path / "data"), "image_size": 32, "val_fraction": 0.34}
    raw["model"]["backbone"] = {"type": "timm", **vit}
    raw["output"] = {"root": str(tmp_path / "reports")}
    b = build_data(validate_spec(raw))
    assert (b.mean, b.std) == (cfg["mean"], cfg["std"])
    for ds in (b.train_plain, b.val):
        torch.testing.assert_close(ds[0][0], torch.full((3, 32, 32), (200 / 255 - 0.5) / 0.5))


def test_a_plugin_backbone_can_name_its_normalisation() -> None:
    from qsight.models import backbone_normalization

    class GreyParams(Params):
        def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
            return (0.4, 0.4, 0.4), (0.2, 0.2, 0.2)

    assert backbone_normalization(GreyParams()) == ((0.4, 0.4, 0.4), (0.2, 0.2, 0.2))
    assert backbone_normalization(Params()) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# -- end to end: Grad-CAM file names, and images skipped while loading in summary.json ----------------


def _run(tmp: Path, data: dict[str, Any]) -> Path:
    run_dir = tmp / "run"
    res = cli("run", str(tiny_spec(tmp, data={"type": "image-folder", "image_size": 32, **data})),
              "--run-dir", str(run_dir), "--dry-run")
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_gradcam_files_are_named_per_sample(tmp_path: Path) -> None:
    """Old code: b/img4's Grad-CAM files overwrote a/img4's (both named img4_*)."""
    for cls in ("a", "b"):
        for k in range(3):
            _png(tmp_path / "data" / cls / f"t{k}.png", k)
        _png(tmp_path / "data" / "val" / cls / "img4.png", 7)
    run_dir = _run(tmp_path, {"root": str(tmp_path / "data"), "val_dir": "val"})
    cams = run_dir / "visualizations" / "classical" / "epoch_01" / "gradcam"
    assert {p.name for p in cams.glob("*_original.png")} == {"a__img4_original.png", "b__img4_original.png"}


@pytest.mark.slow
def test_a_run_skips_and_counts_images_found_bad_while_loading(tmp_path: Path) -> None:
    """Old code: with image_check = "none" the corrupt image stopped the run (exit 2) despite "skip"."""
    _flat_folders(tmp_path / "data", 90)
    _corrupt(tmp_path / "data" / "b" / "b2.png")
    run_dir = _run(tmp_path, {"root": str(tmp_path / "data"), "image_check": "none", "on_bad_image": "skip"})
    skipped = summary(run_dir)["skipped_images"]
    assert len(skipped) == 1 and skipped[0].startswith("b/b2.png: image b/b2.png unreadable image")
