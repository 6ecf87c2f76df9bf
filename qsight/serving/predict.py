"""Predict image files with a trained run: probabilities per head, a CSV row per image, Grad-CAM overlays.

CSV columns: ``path, grade, grade_name, referable, p_<class>..., error``; with every head also
``<head>_grade, <head>_p_<class>...`` per output (the ensemble last). ``grade`` is the predicted
class index of the chosen output, ``referable`` 1 when it is ≥ 2 on a five-grade DR scale (empty
for other class sets). An image that cannot be read keeps its row: empty values and the error.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from qsight.errors import DataError
from qsight.evaluation.metrics import referable_threshold
from qsight.metric_names import ENSEMBLE
from qsight.runs.layout import atomic_writer
from qsight.serving.loader import TrainedModel

Item = tuple[int, Tensor | None, str]


@dataclass(frozen=True)
class PredictedImage:
    """One input: its probabilities per output (head or ensemble), or why it could not be read."""

    path: Path
    probs: dict[str, np.ndarray] | None  # output -> (K,)
    error: str = ""

    def grade(self, target: str) -> int | None:
        return None if self.probs is None else int(np.argmax(self.probs[target]))


class ImageFiles(Dataset[Item]):
    """Image files as model inputs; a file that fails to load gives its error instead of a tensor."""

    def __init__(self, paths: Sequence[Path], trained: TrainedModel) -> None:
        self.paths, self.trained = list(paths), trained

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Item:
        path = self.paths[i]
        if not path.is_file():
            return i, None, "not found" if not path.exists() else "not a file"
        try:
            return i, self.trained.load_image(path), ""
        except DataError as exc:
            return i, None, str(exc).removeprefix(f"{path}: ")
        except (OSError, ValueError, RuntimeError) as exc:  # decoders and transforms refusing odd images
            return i, None, f"cannot read image ({type(exc).__name__}: {exc})"


def _keep(items: list[Item]) -> list[Item]:
    return items


def predict_images(
    trained: TrainedModel,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> list[PredictedImage]:
    """Probabilities of every output for each image, in input order; `on_batch(n)` after each batch."""
    loader = DataLoader(ImageFiles(paths, trained), batch_size=batch_size, num_workers=workers, collate_fn=_keep)
    results: list[PredictedImage | None] = [None] * len(paths)
    for items in loader:
        good = [(i, x) for i, x, _ in items if x is not None]
        for i, _, error in items:
            if error:
                results[i] = PredictedImage(paths[i], None, error)
        if good:
            probs = trained.probabilities(torch.stack([x for _, x in good]))
            for row, (i, _) in enumerate(good):
                results[i] = PredictedImage(paths[i], {k: v[row].numpy() for k, v in probs.items()})
        if on_batch is not None:
            on_batch(len(items))
    return [r for r in results if r is not None]


def columns(class_names: Sequence[str], targets: Sequence[str] = ()) -> list[str]:
    """The CSV header: the chosen output's columns, then per-output columns for each of `targets`."""
    out = ["path", "grade", "grade_name", "referable", *(f"p_{c}" for c in class_names)]
    for t in targets:
        out += [f"{t}_grade", *(f"{t}_p_{c}" for c in class_names)]
    return [*out, "error"]


def rows(
    results: Sequence[PredictedImage], class_names: Sequence[str], target: str = ENSEMBLE,
    targets: Sequence[str] = (),
) -> list[dict[str, str | int | float]]:
    """One CSV row per result (see the module docstring)."""
    referable_from = referable_threshold(len(class_names))
    out: list[dict[str, str | int | float]] = []
    for r in results:
        row: dict[str, str | int | float] = {"path": str(r.path), "error": r.error}
        if r.probs is not None:
            grade = int(np.argmax(r.probs[target]))
            row |= {"grade": grade, "grade_name": class_names[grade]}
            row["referable"] = "" if referable_from is None else int(grade >= referable_from)
            row |= {f"p_{c}": float(v) for c, v in zip(class_names, r.probs[target], strict=True)}
            for t in targets:
                row[f"{t}_grade"] = int(np.argmax(r.probs[t]))
                row |= {f"{t}_p_{c}": float(v) for c, v in zip(class_names, r.probs[t], strict=True)}
        out.append(row)
    return out


def write_predictions(
    results: Sequence[PredictedImage], class_names: Sequence[str], out: Path, target: str = ENSEMBLE,
    targets: Sequence[str] = (),
) -> Path:
    """Write the predictions CSV (atomically); returns its path."""
    with atomic_writer(out, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns(class_names, targets), restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows(results, class_names, target, targets))
    return out


def write_gradcam(
    trained: TrainedModel, results: Sequence[PredictedImage], folder: Path, target: str = ENSEMBLE,
    batch_size: int = 16,
) -> list[Path]:
    """One Grad-CAM overlay per readable image, for the class `target` predicts: ``<stem>_gradcam.png``."""
    from qsight.evaluation.artifact import safe_name
    from qsight.evaluation.gradcam import cam_mode, compute_cams
    from qsight.evaluation.layers import resolve_target_layer
    from qsight.evaluation.render import overlay, save_png

    folder.mkdir(parents=True, exist_ok=True)
    layer = resolve_target_layer(trained.model, trained.spec.explain.target_layer)
    done = [r for r in results if r.probs is not None]
    names = _unique([safe_name(r.path.stem) for r in done])
    written: list[Path] = []
    for start in range(0, len(done), batch_size):
        chunk = done[start : start + batch_size]
        images = torch.stack([trained.load_image(r.path) for r in chunk]).to(trained.device)
        with cam_mode(trained.model):
            predicted = [int(np.argmax(r.probs[target])) for r in chunk if r.probs is not None]
            cams = compute_cams(trained.model, images, {target: predicted}, layer)
        for r, cam, name in zip(chunk, cams[target], names[start : start + batch_size], strict=True):
            picture = trained.display(r.path).permute(1, 2, 0).numpy()
            written.append(save_png(overlay(picture, cam), folder / f"{name}_gradcam.png"))
    return written


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out
