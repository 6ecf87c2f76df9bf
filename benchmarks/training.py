"""Trainer overhead vs a plain PyTorch loop, and a frozen-backbone stage with vs without the feature cache.

    python benchmarks/training.py            # table
    python benchmarks/training.py --json     # one JSON object

Both comparisons run side by side in one process on the same model and data
(the flagship's resnet18 at 64 px on synthetic fundus images by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from qsight.config.overrides import apply_overrides
from qsight.config.spec import ExperimentSpec, validate_spec
from qsight.experiment.build import build_data, build_hybrid
from qsight.training.checkpoints import CheckpointStore
from qsight.training.loop import StepContext, predict
from qsight.training.optim import make_optimizer, make_scheduler
from qsight.training.reporting import EpochReporter
from qsight.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def load(spec_file: Path, root: Path, train_size: int) -> ExperimentSpec:
    with spec_file.open("rb") as fh:
        raw = tomllib.load(fh)
    raw.pop("sinks", None)
    raw = apply_overrides(raw, [f'output.root="{root}"', f"data.train_size={train_size}", "train.device=cpu"])
    return validate_spec(raw)


def make_trainer(spec: ExperimentSpec, root: Path) -> Trainer:
    data = build_data(spec)
    model = build_hybrid(spec, data.num_classes, torch.device("cpu"))
    reporter = EpochReporter(spec, data, model, None, root, torch.device("cpu"))
    return Trainer(spec, data, model, reporter, CheckpointStore(root), device=torch.device("cpu"))


def qsight_epoch(trainer: Trainer, stage_index: int, *, cached: bool | None = None) -> float:
    """One epoch through the Trainer's own path (plan, sampler, per-sample seeds, loop)."""
    stage = trainer.spec.stages[stage_index]
    if cached is not None:
        stage = stage.model_copy(update={"cache_features": cached})
    trainer.model.set_stage(stage)
    start = time.perf_counter()
    plan = trainer._plan(stage_index, stage)
    net = trainer._wrap(plan)
    params = trainer.model.trainable_parameters()
    opt = make_optimizer(stage, params)
    ctx = StepContext(opt, make_scheduler(opt, stage, 100), params, trainer.device, 1, stage.grad_clip)
    trainer.model.set_active(stage.heads)
    trainer._train_one_epoch(plan, net, ctx, 0)
    return time.perf_counter() - start


def plain_epoch(trainer: Trainer, stage_index: int) -> float:
    """The same epoch as a textbook loop: DataLoader, forward, loss, backward, clip, step."""
    stage = trainer.spec.stages[stage_index]
    model = trainer.model
    model.set_stage(stage)
    start = time.perf_counter()
    loader = DataLoader(trainer.data.train, batch_size=trainer.spec.train.batch_size, shuffle=True, drop_last=True)
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    model.train()
    for x, y in loader:
        loss, _ = model.loss(model(x), y, None)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, stage.grad_clip or 1e9)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def frozen_stage(trainer: Trainer, stage_index: int, epochs: int, cached: bool) -> tuple[float, float]:
    """A heads-only stage with a validation pass per epoch: (set-up seconds, seconds per epoch).

    With the cache, the set-up computes the heads' inputs once for both splits.
    """
    trainer._feature_cache = None
    stage = trainer.spec.stages[stage_index].model_copy(update={"cache_features": cached})
    trainer.model.set_stage(stage)
    start = time.perf_counter()
    plan = trainer._plan(stage_index, stage)
    net = trainer._wrap(plan)
    setup = time.perf_counter() - start
    params = trainer.model.trainable_parameters()
    opt = make_optimizer(stage, params)
    ctx = StepContext(opt, make_scheduler(opt, stage, 100), params, trainer.device, 1, stage.grad_clip)
    start = time.perf_counter()
    for epoch in range(epochs):
        trainer.model.set_active(stage.heads)
        trainer._train_one_epoch(plan, net, ctx, epoch)
        net.eval()
        predict(net, DataLoader(plan.val_set, batch_size=64), trainer.device)
    return setup, (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=ROOT / "experiments" / "hybrid.toml")
    parser.add_argument("--train-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the frozen-backbone stage")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(load(args.spec, Path(tmp), args.train_size), Path(tmp))
        quantum = next(i for i, s in enumerate(trainer.spec.stages) if s.cache_features is True)
        plain_epoch(trainer, 0)  # warm-up
        plain, ours = [], []
        for _ in range(args.repeats):
            plain.append(plain_epoch(trainer, 0))
            ours.append(qsight_epoch(trainer, 0))
        nocache_setup, nocache_epoch = frozen_stage(trainer, quantum, args.epochs, cached=False)
        cache_setup, cache_epoch = frozen_stage(trainer, quantum, args.epochs, cached=True)
    stage_epochs = trainer.spec.stages[quantum].epochs
    nocache_stage = nocache_setup + stage_epochs * nocache_epoch
    cache_stage = cache_setup + stage_epochs * cache_epoch
    result: dict[str, Any] = {
        "spec": str(args.spec.relative_to(ROOT) if args.spec.is_relative_to(ROOT) else args.spec),
        "train_size": args.train_size,
        "plain_epoch_s": statistics.median(plain),
        "qsight_epoch_s": statistics.median(ours),
        "overhead_ratio": statistics.median(ours) / statistics.median(plain),
        "frozen_epoch_no_cache_s": nocache_epoch,
        "frozen_epoch_cache_s": cache_epoch,
        "cache_epoch_speedup": nocache_epoch / cache_epoch,
        "cache_setup_s": cache_setup,
        "frozen_stage_epochs": stage_epochs,
        "frozen_stage_no_cache_s": nocache_stage,
        "frozen_stage_cache_s": cache_stage,
        "cache_stage_speedup": nocache_stage / cache_stage,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"spec {result['spec']}, {args.train_size} training images, {result['threads']} torch threads")
    print(f"{'classical stage epoch':32s} plain {result['plain_epoch_s']:.2f} s   qsight "
          f"{result['qsight_epoch_s']:.2f} s   ratio {result['overhead_ratio']:.3f} (goal <= 1.10)")
    print(f"{'frozen-backbone epoch (+val)':32s} no cache {nocache_epoch:.3f} s   cache {cache_epoch:.3f} s   "
          f"speed-up {result['cache_epoch_speedup']:.1f}x (goal >= 10)")
    print(f"{'frozen-backbone stage, ' + str(stage_epochs) + ' epochs':32s} no cache {nocache_stage:.2f} s   "
          f"cache {cache_stage:.2f} s (features once: {cache_setup:.2f} s)   "
          f"speed-up {result['cache_stage_speedup']:.1f}x")

if __name__ == "__main__":
    main()
