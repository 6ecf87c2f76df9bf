"""Build an Experiment from a spec (data, model, sinks, Trainer) and execute it."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist

from qsight.components import DATASETS
from qsight.config.spec import ExperimentSpec
from qsight.config.toml_io import spec_data
from qsight.data.base import DataBundle, DataContext
from qsight.errors import BadInputError, RunFailedError
from qsight.experiment.result import RunResult
from qsight.models.hybrid import HybridModel, build_model
from qsight.runs.layout import RunLayout, write_atomic
from qsight.sinks import RunInfo, SinkSet, build_sinks
from qsight.training.checkpoints import CheckpointStore
from qsight.training.distributed import prepare_model
from qsight.training.parallel import DistInfo, init_distributed, shutdown_distributed
from qsight.training.progress import make_progress
from qsight.training.reporting import EpochReporter
from qsight.training.seeding import seed_everything, set_deterministic
from qsight.training.state import RunState
from qsight.training.trainer import Trainer
from registry import component_type

log = logging.getLogger("qsight")


def choose_device(asked: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cuda`` without a GPU is bad input."""
    if asked == "cuda" and not torch.cuda.is_available():
        raise BadInputError("train.device: 'cuda' asked but no CUDA device is available")
    if asked in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def build_data(spec: ExperimentSpec) -> DataBundle:
    """The dataset component named by ``[data]``."""
    ctx = DataContext(seed=spec.seed, cache_dir=Path(spec.output.root) / "cache")
    return DATASETS.get(component_type(spec.data)).build(spec.data, ctx)


def build_hybrid(spec: ExperimentSpec, num_classes: int, device: torch.device) -> HybridModel:
    """The HybridModel of ``[model]`` on `device`."""
    return build_model(spec.model, num_classes).to(device)


def check_world(spec: ExperimentSpec, dist: DistInfo) -> None:
    """Every process takes an equal share of each global batch."""
    if spec.train.batch_size % dist.world_size:
        raise BadInputError(f"train.batch_size: {spec.train.batch_size} does not split evenly over "
                            f"{dist.world_size} processes")


def _shared_folder(folder: Path, dist: DistInfo) -> Path:
    """Every rank writes under rank 0's folder name."""
    if not dist.distributed:
        return folder
    box: list[Any] = [str(folder)]
    tdist.broadcast_object_list(box, src=0)
    return Path(box[0])


@dataclass
class Experiment:
    """The parts of one run, ready to execute."""

    spec: ExperimentSpec
    run_dir: Path
    data: DataBundle
    model: HybridModel
    sinks: SinkSet | None
    trainer: Trainer
    dist: DistInfo
    checkpoints: CheckpointStore

    @classmethod
    def build(cls, spec: ExperimentSpec, run_dir: Path, *, dry_run: bool = False,
              progress: bool = True) -> Experiment:
        """Build everything a run needs; bad data or components raise `BadInputError`."""
        device = choose_device(spec.train.device, _local_rank())
        dist = init_distributed(device)
        check_world(spec, dist)
        run_dir = _shared_folder(run_dir, dist)
        set_deterministic(spec.train.deterministic)
        seed_everything(spec.seed)
        data = build_data(spec)
        model = build_hybrid(spec, data.num_classes, device)
        changed = prepare_model(model, dist, sync_bn=spec.train.sync_batchnorm)
        if changed:
            log.info("%d processes: BatchNorm over the global batch in %s; global-batch random draws in %s",
                     dist.world_size, changed["batchnorm"] or "no layer", changed["random"] or "no layer")
        sinks = None
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            info = RunInfo(spec.name, run_dir.name, run_dir, Path(spec.output.root), spec_data(spec))
            sinks = build_sinks(spec.sinks, info)
            sinks.write_environment(_environment_extra(spec, model, device, dist, data))
        reporter = EpochReporter(spec, data, model, sinks, run_dir, device, dist=dist, dry_run=dry_run)
        store = CheckpointStore(run_dir)
        trainer = Trainer(spec, data, model, reporter, store, device=device, dist=dist,
                          progress=make_progress(progress and dist.is_main), dry_run=dry_run)
        return cls(spec, run_dir, data, model, sinks, trainer, dist, store)

    def resume(self) -> RunState:
        """Load ``checkpoints/last.pt`` into the Trainer; returns where the run stands."""
        self.trainer.resume_from(self.checkpoints.read(self.checkpoints.last))
        return self.trainer.state

    def execute(self) -> RunResult:
        """Run the Trainer; always finish the sinks (summary.json) with the run's status.

        The run ends here: the progress display stops and this process leaves its torchrun process group.
        """
        try:
            return self._execute()
        finally:
            shutdown_distributed()

    def _execute(self) -> RunResult:
        status, message = "failed", ""
        started = time.time()
        pending: BaseException | None = None
        try:
            self.trainer.run()
            status = "completed"
        except KeyboardInterrupt as exc:
            status, message, pending = "interrupted", "interrupted by the user", exc
        except BadInputError as exc:
            message, pending = str(exc), exc
        except RunFailedError as exc:
            message = str(exc)
        except Exception as exc:  # a crash in a component: record it, exit 1
            message = f"{type(exc).__name__}: {exc}"
            self._write_error(traceback.format_exc())
        finally:
            self.trainer.progress.close()
        summary = self._summary(status, message, started)
        if self.sinks is not None:
            if status == "completed" and self.checkpoints.best.is_file():
                self.sinks.log_artifact(self.checkpoints.best, "checkpoints")
            summary["sinks"] = self.sinks.finish(status, summary)
        if pending is not None:
            raise pending
        return RunResult(self.run_dir, status, message, summary)

    def _summary(self, status: str, message: str, started: float) -> dict[str, Any]:
        state = self.trainer.state
        return {
            "status": status,
            "dry_run": self.trainer.dry_run,
            "final": state.last,
            "best": state.best,
            "stages": state.stages,
            "message": message,
            "started": datetime.fromtimestamp(started, UTC).isoformat(),
            "seconds": round(time.time() - started, 2),
            "global_step": state.global_step,
            "skipped_images": list(self.data.skipped),
            "class_names": list(self.data.class_names),
        }

    def _write_error(self, text: str) -> None:
        if self.dist.is_main:
            write_atomic(RunLayout(self.run_dir).error_log, text)
        log.error("run failed:\n%s", text)


def _local_rank() -> int:
    import os

    return int(os.environ.get("LOCAL_RANK", "0"))


def _environment_extra(spec: ExperimentSpec, model: HybridModel, device: torch.device, dist: DistInfo,
                       data: DataBundle) -> dict[str, Any]:
    heads: dict[str, Any] = {}
    for name, module in model.heads.items():
        describe = getattr(module, "describe", None)
        if callable(describe):
            heads[name] = describe()
    return {
        "seed": spec.seed,
        "device": str(device),
        "world_size": dist.world_size,
        "sync_batchnorm": dist.distributed and spec.train.sync_batchnorm,
        "quantum": heads,
        "num_classes": data.num_classes,
        "train_size": len(data.train_labels),
        "val_size": len(data.val_labels),
    }
