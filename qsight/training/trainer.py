"""The Trainer: runs the stages in order. It orchestrates; the work lives elsewhere."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from qsight.config.spec import ExperimentSpec, StageConfig
from qsight.data.balance import class_weights, sample_weights
from qsight.data.base import DataBundle
from qsight.metric_names import loss_head, metric_key
from qsight.models.hybrid import HybridModel
from qsight.training.checkpoints import Checkpoint, CheckpointStore, TrainingParts
from qsight.training.distributed import (
    broadcast_buffers,
    global_weighted_mean,
    mean_over_processes,
    reduce_epoch_stats,
)
from qsight.training.feature_cache import FeatureDataset, compute_features
from qsight.training.loop import StepContext, train_epoch
from qsight.training.optim import make_optimizer, make_scheduler
from qsight.training.parallel import DataParallelOutput, DistInfo, ShardedBatchSampler, use_data_parallel
from qsight.training.progress import ProgressReporter, SilentProgress
from qsight.training.reporting import EpochReporter
from qsight.training.seeding import PerSampleSeed, derive_seed, seed_everything
from qsight.training.state import EarlyStopping, RunState
from registry import component_type

log = logging.getLogger("qsight.training")


EpochHook = Callable[[str, int, dict[str, float]], None]  # (stage, epoch from 1, its metrics)


class _FeatureForward(nn.Module):
    """Routes cached head inputs through the model (so DDP/DP wrap one forward)."""

    def __init__(self, model: HybridModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: dict[str, Tensor]) -> Any:
        return self.model.forward_features(feats)


@dataclass
class StagePlan:
    """How one stage runs: cache, parallelism, loaders."""

    stage: StageConfig
    index: int
    cached: bool
    data_parallel: bool
    train_set: Dataset[Any]
    val_set: Dataset[Any]
    notes: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Trains a HybridModel stage by stage, evaluating and checkpointing every epoch."""

    def __init__(
        self,
        spec: ExperimentSpec,
        data: DataBundle,
        model: HybridModel,
        reporter: EpochReporter,
        checkpoints: CheckpointStore,
        *,
        device: torch.device,
        dist: DistInfo | None = None,
        progress: ProgressReporter | None = None,
        dry_run: bool = False,
    ) -> None:
        self.spec, self.data, self.model, self.reporter = spec, data, model, reporter
        self.checkpoints, self.device = checkpoints, device
        self.dist = dist or DistInfo()
        self.progress = progress or SilentProgress()
        self.dry_run = dry_run
        self.state = RunState()
        self.class_weights = self._class_weights()
        self.quantum_heads = [n for n, h in spec.model.heads.items() if component_type(h) == "quantum"]
        self._resume: Checkpoint | None = None
        self._feature_cache: tuple[FeatureDataset, FeatureDataset] | None = None
        self.epoch_hooks: list[EpochHook] = []  # called after each epoch's checkpoint (a sweep's pruner)

    # -- public -------------------------------------------------------------------------------------

    def resume_from(self, checkpoint: Checkpoint) -> None:
        """Continue from a checkpoint (position, model; optimizer and RNG when its stage starts)."""
        checkpoint.restore_model(self.model)
        self.state = checkpoint.run_state
        self._resume = checkpoint

    def run(self) -> RunState:
        """Run every stage not finished yet; returns the final run state."""
        for index, stage in enumerate(self.spec.stages):
            if index < self.state.stage_index:
                continue
            self._run_stage(index, stage)
        self.state.finished = True
        return self.state

    # -- stages -------------------------------------------------------------------------------------

    def _run_stage(self, index: int, stage: StageConfig) -> None:
        self.model.set_stage(stage)  # re-applied on every transition, never left stale
        plan = self._plan(index, stage)
        net = self._wrap(plan)
        sampler = self._train_sampler(plan, epoch=0)
        steps_per_epoch = max(1, len(sampler) // stage.grad_accumulation)
        if self.spec.train.limit_batches or self.dry_run:
            steps_per_epoch = max(1, min(len(sampler), self._limit() or len(sampler)) // stage.grad_accumulation)
        params = self.model.trainable_parameters()
        optimizer = make_optimizer(stage, params)
        scheduler = make_scheduler(optimizer, stage, steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda") if self._amp() else None
        early = EarlyStopping(stage.patience, stage.monitor_mode)
        parts = TrainingParts(self.model, optimizer, scheduler, scaler, early)
        if self._resume is not None and self.state.stage_index == index:
            self._resume.restore_training(parts)
            self._resume = None
        groups = list(self.model.trainable_groups().values()) if stage.grad_clip_scope == "module" else None
        ctx = StepContext(optimizer, scheduler, params, self.device, stage.grad_accumulation,
                          stage.grad_clip, scaler, self._amp(), groups)
        self.reporter.start_stage(stage, plan.notes)
        while self.state.epoch < stage.epochs and not parts.early.stopped:
            epoch = self.state.epoch
            seed_everything(derive_seed(self.spec.seed, index, epoch))
            self.model.set_active(stage.heads)  # every epoch: active heads never stale
            self._anneal(stage, epoch)
            stats = self._train_one_epoch(plan, net, ctx, epoch)
            metrics = self.reporter.end_epoch(stage, epoch, stats, self.state.global_step, plan.val_set, net,
                                              cached=plan.cached)
            improved = parts.early.update(metrics.get(stage.monitor))
            self.state.epoch += 1
            self.state.record_epoch(stage.name, epoch, metrics, improved)
            done = self.state.epoch >= stage.epochs or parts.early.stopped or self.dry_run
            if done and stage.restore_best and not improved:
                self._restore_best()
            if self.dist.is_main:
                self.checkpoints.save(parts, self.state, stage.name, best=improved, stage_end=done)
            for hook in self.epoch_hooks:
                hook(stage.name, epoch + 1, metrics)
            if self.dry_run:
                break
        self.state.stage_done(stage.name, parts.early.stopped)

    def _train_one_epoch(self, plan: StagePlan, net: nn.Module, ctx: StepContext, epoch: int) -> Any:
        sampler = self._train_sampler(plan, epoch)
        dataset = plan.train_set if plan.cached else PerSampleSeed(plan.train_set, self.spec.seed, plan.index, epoch)
        loader = self._loader(dataset, sampler)
        limit = self._limit()
        self.progress.start_epoch(plan.stage.name, epoch, plan.stage.epochs, min(len(sampler), limit or len(sampler)))
        model, weights, dist = self.model, self.class_weights, self.dist

        def loss_fn(x: Any, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            out = net(x)
            loss, parts = model.loss(out, y, weights)
            return global_weighted_mean(loss, parts, weights, y, dist)

        started, seen = time.perf_counter(), [0]

        def on_step(i: int, values: dict[str, float], n: int) -> None:
            seen[0] += n * dist.world_size
            mean = mean_over_processes(values, dist)  # the global batch's losses, as one process shows them
            self.progress.advance(mean, seen[0] / max(time.perf_counter() - started, 1e-9))
            if (i + 1) % (self.spec.train.log_every * ctx.accumulation) == 0:
                step_metrics = {metric_key("train", loss_head(k), "loss"): v for k, v in mean.items()}
                step_metrics["train/lr"] = float(ctx.optimizer.param_groups[0]["lr"])
                self.reporter.log_step(step_metrics, self.state.global_step + (i + 1) // ctx.accumulation,
                                       plan.stage.name, epoch)

        net.train()
        stats = reduce_epoch_stats(train_epoch(loss_fn, loader, ctx, on_step=on_step, limit=limit), dist)
        broadcast_buffers(self.model, dist)  # evaluation agrees even without synchronised BatchNorm
        self.state.global_step += stats.steps
        self.progress.end_epoch()
        return stats

    # -- planning -----------------------------------------------------------------------------------

    def _plan(self, index: int, stage: StageConfig) -> StagePlan:
        cache = stage.cache_features
        cached = bool(self.model.frozen_upstream(stage)) if cache == "auto" else bool(cache)
        gpus = torch.cuda.device_count() if self.device.type == "cuda" else 0
        dp = use_data_parallel(stage, self.quantum_heads, gpus) and not self.dist.distributed
        if any(m in ("backbone", "neck") for m in stage.train):
            self._feature_cache = None  # upstream changes in this stage: cached inputs go stale
        train_set: Dataset[Any] = self.data.train
        val_set: Dataset[Any] = self.data.val
        if cached:
            if self._feature_cache is None:  # reused by later stages while upstream stays frozen
                self._feature_cache = self._cached_sets()
            train_set, val_set = self._feature_cache
        notes = {"feature_cache": cached, "data_parallel": dp, "ddp": self.dist.distributed}
        return StagePlan(stage, index, cached, dp, train_set, val_set, notes)

    def _cached_sets(self) -> tuple[FeatureDataset, FeatureDataset]:
        self.model.eval()
        bs = self.spec.train.eval_batch_size or self.spec.train.batch_size
        workers = self.spec.train.num_workers
        train = compute_features(self.model.features, self.data.train_plain, batch_size=bs,
                                 device=self.device, num_workers=workers, dist=self.dist)
        val = compute_features(self.model.features, self.data.val, batch_size=bs, device=self.device,
                               num_workers=workers, dist=self.dist)
        return train, val

    def _wrap(self, plan: StagePlan) -> nn.Module:
        net: nn.Module = _FeatureForward(self.model) if plan.cached else self.model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(net, device_ids=ids,
                                           find_unused_parameters=self.model.has_unused_trainable())
        if plan.data_parallel:
            return DataParallelOutput(net)
        return net

    def _train_sampler(self, plan: StagePlan, epoch: int) -> ShardedBatchSampler:
        labels: Sequence[int] = self.data.train_labels
        weights = sample_weights(labels, self.data.num_classes) if self.data.weighted_sampler else None
        return ShardedBatchSampler(
            len(labels), self.spec.train.batch_size, seed=derive_seed(self.spec.seed, plan.index, epoch, 7),
            shuffle=True, rank=self.dist.rank, world_size=self.dist.world_size,
            drop_last=len(labels) > self.spec.train.batch_size, weights=weights,
        )

    def _loader(self, dataset: Dataset[Any], sampler: ShardedBatchSampler) -> DataLoader[Any]:
        workers = self.spec.train.num_workers
        return DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                          persistent_workers=False, pin_memory=self.device.type == "cuda")

    # -- helpers ------------------------------------------------------------------------------------

    def _limit(self) -> int | None:
        return 1 if self.dry_run else self.spec.train.limit_batches

    def _amp(self) -> bool:
        return self.spec.train.amp and self.device.type == "cuda"

    def _anneal(self, stage: StageConfig, epoch: int) -> None:
        a = stage.anneal
        if a is None:
            self.model.set_anneal(None, 0.0)  # no schedule: keep the temperature trained with, no noise
            return
        t = epoch / max(1, stage.epochs - 1)
        self.model.set_anneal(a.start_temp + t * (a.end_temp - a.start_temp),
                              a.start_noise + t * (a.end_noise - a.start_noise))

    def _class_weights(self) -> Tensor | None:
        if not self.spec.train.class_weighted_loss:
            return None
        weights = class_weights(self.data.train_labels, self.data.num_classes)
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def _restore_best(self) -> None:
        """Reload the stage's best epoch (``best.pt``, written at least one epoch ago by rank 0)."""
        best = self.checkpoints.restore_best(self.model)
        self.state.last = dict(self.state.best.get("metrics", self.state.last))
        log.info("restored the best epoch %s of stage %s", self.state.best.get("epoch"), best.stage)

