"""Re-evaluate a trained run without retraining: its validation or test split, or a new labelled dataset,
optionally under other samplers for its quantum heads (``--set model.heads.<q>.sampler=...``).

Each evaluation gets ``<run folder>/evaluations/<id>/``: ``metrics.json`` (``<split>/<head>/<metric>``),
``evaluation.json`` (what was evaluated: split or data, overrides, checkpoint, samplers), and the
confusion matrices and confidence table of an epoch folder. It is also logged to the run's MLflow run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from qsight.data.images import Sample
from qsight.data.params import CsvParams
from qsight.errors import BadInputError
from qsight.evaluation import EvalReport, evaluate, write_report
from qsight.metric_names import prefixed
from qsight.runs.layout import RunLayout, write_atomic
from qsight.serving.loader import TrainedModel, describe, load_trained
from registry import component_type

log = logging.getLogger("qsight.serving")
SPLITS = ("val", "test")


@dataclass(frozen=True)
class Evaluation:
    """One finished re-evaluation."""

    id: str
    folder: Path
    split: str
    metrics: dict[str, float]
    report: EvalReport
    info: dict[str, Any]
    ci: dict[str, list[float]] = field(default_factory=dict)  # [low, high] per metric, where the run has them
    paired: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Labelled:
    """What is evaluated: images (model inputs), their labels and ids, and where they came from."""

    dataset: Dataset[Any]
    labels: list[int]
    ids: list[str]
    source: str


def run_split(trained: TrainedModel, split: str) -> Labelled:
    """The run's own validation or test split, built as the run built it."""
    from qsight.experiment.build import build_data

    if split not in SPLITS:
        raise BadInputError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    data = build_data(trained.spec)
    if split == "val":
        return Labelled(data.val, list(data.val_labels), [str(i) for i in data.val_ids], "val")
    if data.test is None:
        raise BadInputError(f"{trained.run_dir}: the run has no test split (its dataset holds out none)")
    return Labelled(data.test, list(data.test_labels), [str(i) for i in data.test_ids], "test")


def labelled_data(trained: TrainedModel, path: Path) -> Labelled:
    """A new labelled dataset: a folder with one sub-folder per class (named by the run's class names
    or indices), or a labels CSV in the run's (else APTOS 2019's) layout; every image is evaluated."""
    from qsight.data.datasets import FileDataset
    from qsight.data.files import check_samples
    from qsight.serving.inputs import csv_layout

    layout = csv_layout(trained.spec).model_copy(update={"class_names": trained.class_names})
    if path.is_dir():
        samples = _folder_samples(path, trained.class_names)
    elif path.is_file():
        samples = _csv_samples(path, layout)
    else:
        raise BadInputError(f"{path}: no such folder or CSV")
    samples = check_samples(samples, layout, path if path.is_dir() else path.parent, [])
    if not samples:
        raise BadInputError(f"{path}: no labelled images")
    dataset = FileDataset(samples, trained.transform, trained.spec.data.image_size)  # type: ignore[attr-defined]
    return Labelled(dataset, [s.label for s in samples], [str(s.path) for s in samples], str(path))


def _folder_samples(root: Path, class_names: Sequence[str]) -> list[Sample]:
    from qsight.serving.inputs import IMAGE_SUFFIXES

    samples: list[Sample] = []
    known = {name: k for k, name in enumerate(class_names)} | {str(k): k for k in range(len(class_names))}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in known]
    if unknown:
        raise BadInputError(f"{root}: sub-folder(s) {', '.join(map(repr, unknown))} name no class of the run "
                            f"({', '.join(class_names)}, or 0..{len(class_names) - 1})")
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        samples += [Sample(p, known[folder.name], f"{folder.name}/{p.name}") for p in files]
    return samples


def _csv_samples(path: Path, layout: CsvParams) -> list[Sample]:
    from qsight.data.tabular import read_rows, to_samples

    image_dir = layout.image_dir if layout.image_dir and (path.parent / layout.image_dir).is_dir() else ""
    rows = read_rows(path.parent, path.name, image_dir, layout, [])
    return to_samples(rows, layout.class_names or (), layout, [])


def samplers(trained: TrainedModel) -> dict[str, str]:
    """The sampler of each quantum head (for the record)."""
    heads = trained.spec.model.heads.items()
    found = {name: getattr(head, "sampler", None) for name, head in heads if component_type(head) == "quantum"}
    return {name: component_type(sampler) for name, sampler in found.items() if sampler is not None}


def evaluate_run(
    run_dir: Path,
    *,
    split: str | None = None,
    data: Path | None = None,
    overrides: Sequence[str] = (),
    checkpoint: str = "last",
    device: str = "cpu",
    batch_size: int | None = None,
    log_mlflow: bool = True,
) -> Evaluation:
    """Evaluate a trained run (see the module docstring); metrics use split ``test`` for new data."""
    from qsight.experiment.launch import new_run_id
    from qsight.training.loop import predict

    if data is not None and split is not None:
        raise BadInputError("evaluate either a split of the run or new data, not both")
    trained = load_trained(run_dir, overrides, checkpoint=checkpoint, device=device)
    target = labelled_data(trained, data) if data is not None else run_split(trained, split or "val")
    name = "test" if data is not None else target.source
    bs = batch_size or trained.spec.train.eval_batch_size or trained.spec.train.batch_size
    loader = DataLoader(target.dataset, batch_size=bs, shuffle=False, num_workers=trained.spec.train.num_workers)
    preds = predict(trained.model, loader, trained.device)
    report = evaluate(preds.labels, preds.probs, trained.class_names, target.ids)
    metrics = prefixed(name, {k: float(v) for k, v in report.metrics.items()})
    evaluation_id = new_run_id()
    folder = RunLayout(run_dir).evaluation_dir(evaluation_id)
    write_report(report, folder)
    info = {"id": evaluation_id, "created": datetime.now(UTC).isoformat(), "split": name, "data": target.source,
            "samples": len(target.labels), "samplers": samplers(trained), **describe(trained)}
    ci, paired = _intervals(trained, report, name, folder)
    write_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_atomic(folder / "evaluation.json", json.dumps(info, indent=2) + "\n")
    if log_mlflow:
        from qsight.serving.tracking import log_evaluation

        info["mlflow_run"] = log_evaluation(trained, evaluation_id, metrics, folder)
        write_atomic(folder / "evaluation.json", json.dumps(info, indent=2) + "\n")
    log.info("evaluation %s of %s: %s", evaluation_id, run_dir, folder)
    return Evaluation(evaluation_id, folder, name, metrics, report, info, ci, paired)


def _intervals(trained: TrainedModel, report: EvalReport, split: str,
               folder: Path) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]]]:
    """Bootstrap intervals and paired differences, as the run's test split has them (the run's seed and
    resample count); written to ``intervals.csv``, ``paired.csv`` and ``intervals.json``. Empty for a run
    that computed none."""
    from qsight.evaluation.bootstrap import bootstrap
    from qsight.evaluation.intervals import interval_entries, paired_entries, write_intervals, write_paired
    from qsight.runs.folder import RunFolder
    from qsight.runs.layout import INTERVALS, PAIRED

    if not RunFolder(trained.run_dir).test_ci:
        return {}, {}
    boot = bootstrap(report.labels, report.probs, report.metrics, seed=trained.spec.seed)
    write_intervals(report, boot, split, folder / INTERVALS)
    write_paired(boot, folder / PAIRED)
    ci, paired = interval_entries(split, boot), paired_entries(boot)
    write_atomic(folder / "intervals.json", json.dumps({"ci": ci, "paired": paired}, indent=2) + "\n")
    return ci, paired
