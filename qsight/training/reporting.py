"""End of each epoch: predict, evaluate, explain, write locally, then hand to the sinks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from qsight.config.spec import ExperimentSpec, StageConfig
from qsight.data.base import DataBundle
from qsight.evaluation import (
    EvalReport,
    GradCamResult,
    PointingReport,
    choose_samples,
    evaluate,
    explain,
    lesion_samples,
    score_explanations,
    write_report,
)
from qsight.metric_names import ENSEMBLE, loss_head, metric_key, prefixed
from qsight.runs.layout import RunLayout
from qsight.sinks.fanout import SinkSet
from qsight.training.distributed import broadcast_from_main, predict_split, unwrap
from qsight.training.loop import EpochStats
from qsight.training.parallel import DistInfo

log = logging.getLogger("qsight.training")


class EpochReporter:
    """Turns one validation pass into metrics and artifacts; only the main process evaluates and writes.

    Under torchrun each process predicts its share of the split; rank 0 evaluates the
    gathered predictions of the whole split and every process gets its metrics.
    """

    def __init__(
        self,
        spec: ExperimentSpec,
        data: DataBundle,
        model: nn.Module,
        sinks: SinkSet | None,
        run_dir: Path,
        device: torch.device,
        *,
        dist: DistInfo | None = None,
        dry_run: bool = False,
    ) -> None:
        self.spec, self.data, self.model, self.sinks = spec, data, model, sinks
        self.run_dir, self.device, self.dry_run = run_dir, device, dry_run
        self.dist = dist or DistInfo()
        self.samples = choose_samples(list(data.val_labels), spec.explain.samples, seed=spec.seed)
        self._pointing: list[int] | None = None

    def start_stage(self, stage: StageConfig, notes: dict[str, Any]) -> None:
        log.info("stage %s starts: heads %s, train %s, %s", stage.name, stage.heads, stage.train, notes)

    def log_step(self, metrics: dict[str, float], step: int, stage: str, epoch: int) -> None:
        if self.sinks is not None:
            self.sinks.log_metrics(metrics, step, {"stage": stage, "epoch": epoch + 1})

    def end_epoch(
        self, stage: StageConfig, epoch: int, stats: EpochStats, step: int, val_set: Dataset[Any],
        net: nn.Module, *, cached: bool,
    ) -> dict[str, float]:
        """Validation metrics (``val/<head>/<metric>``) plus the epoch's training losses (every process)."""
        net.eval()
        bs = self.spec.train.eval_batch_size or self.spec.train.batch_size
        preds, order = predict_split(unwrap(net), val_set, self.dist, batch_size=bs, device=self.device,
                                     num_workers=self.spec.train.num_workers, limit=bs if self.dry_run else None)
        metrics: dict[str, float] | None = None
        if self.dist.is_main:
            ids = [self.data.val_ids[i] for i in order]
            report = evaluate(preds.labels, preds.probs, self.data.class_names, ids)
            metrics = prefixed("val", {k: float(v) for k, v in report.metrics.items()})
            metrics.update({metric_key("train", loss_head(k), "loss"): v for k, v in stats.losses.items()})
            metrics["train/epoch_seconds"] = stats.seconds
            metrics["train/samples_per_second"] = stats.samples / max(stats.seconds, 1e-9)
            self._write(stage, epoch, step, report, metrics)
        out: dict[str, float] = broadcast_from_main(metrics, self.dist)
        return out

    def _write(self, stage: StageConfig, epoch: int, step: int, report: EvalReport, metrics: dict[str, float]) -> None:
        """Artifacts (and Grad-CAM metrics, added to `metrics`) to the run folder and the sinks."""
        if self.sinks is None:
            return
        folder = RunLayout(self.run_dir).epoch_dir(stage.name, epoch + 1)
        artifacts = list(write_report(report, folder))
        if self._explain_due(stage, epoch):
            artifacts += self._explain(stage, folder / "gradcam").artifacts()
        if self._stage_end(stage, epoch):
            scored = self._score(stage)
            if scored is not None:
                metrics.update(prefixed("val", scored.metrics()))
        context = {"stage": stage.name, "epoch": epoch + 1}
        self.sinks.log_metrics(metrics, step, context)
        for art in artifacts:
            key = f"{stage.name}/{art.key}"
            if art.kind == "image":
                self.sinks.log_image(key, art.path, step)
            else:
                self.sinks.log_table(key, art.path, step)

    def _explain_due(self, stage: StageConfig, epoch: int) -> bool:
        cfg = self.spec.explain
        return cfg.enabled and ((epoch + 1) % cfg.every == 0 or epoch + 1 == stage.epochs or self.dry_run)

    def _stage_end(self, stage: StageConfig, epoch: int) -> bool:
        """The pointing game is scored on a stage's last epoch (every epoch of a dry run)."""
        return self.spec.explain.enabled and (epoch + 1 == stage.epochs or self.dry_run)

    def _explain(self, stage: StageConfig, out_dir: Path) -> GradCamResult:
        idx = self.samples
        images = torch.stack([self.data.val[i][0] for i in idx])
        display = [self.data.display_image(i) for i in idx]
        labels = [int(self.data.val_labels[i]) for i in idx]
        masks: list[np.ndarray | None] | None = None
        if self.data.lesion_mask is not None:
            masks = [self.data.lesion_mask(i) for i in idx]
        cfg = self.spec.explain
        return explain(
            self.model, images.to(self.device), display, labels, [*stage.heads, ENSEMBLE], out_dir,
            target_layer=cfg.target_layer, lesion_masks=masks,
            names=[self.data.sample_name(i) for i in idx], class_names=self.data.class_names,
            method=cfg.method, min_map_size=cfg.min_map_size, tolerance=cfg.pointing_tolerance,
        )

    def pointing_indices(self) -> list[int]:
        """The lesion-bearing validation samples the pointing game is scored on (none without masks)."""
        if self._pointing is None:
            found = self.data.lesion_mask
            count = self.spec.explain.pointing_samples
            if found is None or count == 0:
                self._pointing = []
            else:
                bearing = [bool(found(i).any()) for i in range(len(self.data.val_labels))]
                self._pointing = lesion_samples(self.data.val_labels, bearing, count, seed=self.spec.seed)
        return self._pointing[:4] if self.dry_run else self._pointing

    def _score(self, stage: StageConfig) -> PointingReport | None:
        """The pointing game of every target on the lesion-bearing samples, or None without any."""
        idx = self.pointing_indices()
        if not idx or self.data.lesion_mask is None:
            return None
        cfg = self.spec.explain
        images = torch.stack([self.data.val[i][0] for i in idx])
        masks: list[np.ndarray | None] = [self.data.lesion_mask(i) for i in idx]
        labels = [int(self.data.val_labels[i]) for i in idx]
        report = score_explanations(
            self.model, images, labels, masks, [*stage.heads, ENSEMBLE], target_layer=cfg.target_layer,
            batch_size=self.spec.train.eval_batch_size or self.spec.train.batch_size, method=cfg.method,
            min_map_size=cfg.min_map_size, tolerance=cfg.pointing_tolerance,
        )
        for target, score in report.scores.items():
            log.info("Grad-CAM %s at %s: pointing game %s on %d samples (chance %s, on other samples' lesions %s,"
                     " %d blank)", target, report.layer, _fmt(score.value), score.scored, _fmt(score.chance),
                     _fmt(score.shuffled_value), score.blank)
        return report


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
