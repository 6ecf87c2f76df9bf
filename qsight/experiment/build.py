"""Build an Experiment from a spec (data, model, sinks, Trainer) and execute it."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
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
from qsight.models.capacity import head_parameters
from qsight.models.hybrid import HybridModel, build_model
from qsight.models.normalization import backbone_normalization
from qsight.runs.layout import RunLayout, write_atomic
from qsight.sinks import RunInfo, SinkSet, build_sinks
from qsight.training.checkpoints import CheckpointStore
from qsight.training.distributed import prepare_model
from qsight.training.parallel import DistInfo, init_distributed, shutdown_distributed
from qsight.training.progress import make_progress
from qsight.training.reporting import EpochReporter
from qsight.training.seeding import seed_everything, set_deterministic
from qsight.training.state import RunState
from qsight.training.testing import run_test_split
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
    """The dataset component named by ``[data]``, normalised as ``[model.backbone]`` expects."""
    mean, std = backbone_normalization(spec.model.backbone)
    ctx = DataContext(seed=spec.seed, cache_dir=Path(spec.output.root) / "cache", mean=mean, std=std)
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
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: ExperimentSpec, run_dir: Path, *, dry_run: bool = False,
              progress: bool = True, resumed: bool = False) -> Experiment:
        """Build everything a run needs; bad data or components raise `BadInputError`.

        `resumed`: the folder's earlier run is continued (its sinks reopen their runs).
        """
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
            info = RunInfo(spec.name, run_dir.name, run_dir, Path(spec.output.root), spec_data(spec),
                           resumed=resumed, dry_run=dry_run)
            sinks = build_sinks(spec.sinks, info)
            sinks.write_environment(_environment_extra(spec, model, device, dist, data))
        reporter = EpochReporter(spec, data, model, sinks, run_dir, device, dist=dist, dry_run=dry_run)
        store = CheckpointStore(run_dir)
        trainer = Trainer(spec, data, model, reporter, store, device=device, dist=dist,
                          progress=make_progress(progress and dist.is_main), dry_run=dry_run)
        return cls(spec, run_dir, data, model, sinks, trainer, dist, store)

    def tag(self, tags: Mapping[str, str]) -> None:
        """Tags (e.g. a sweep's name and trial) written to environment.json now and summary.json at the end."""
        self.tags.update(tags)
        if self.sinks is not None:
            self.sinks.write_environment({"tags": dict(self.tags)})

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
        extra: dict[str, Any] = {}
        try:
            self.trainer.run()
            extra = self._test()
            status = "completed"
        except KeyboardInterrupt as exc:
            status, message, pending = "interrupted", "interrupted by the user", exc
        except BadInputError as exc:
            message, pending = str(exc), exc
        except RunFailedError as exc:
            message = str(exc)
        except OSError as exc:  # a full disk, a vanished mount: stop cleanly, checkpoints stay resumable
            message = f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}"
            self._write_error(traceback.format_exc())
        except Exception as exc:  # a crash in a component: record it, exit 1
            message = f"{type(exc).__name__}: {exc}"
            self._write_error(traceback.format_exc())
        finally:
            self.trainer.progress.close()
        summary = self._summary(status, message, started) | extra
        if self.sinks is not None:
            if status == "completed" and self.checkpoints.best.is_file():
                self.sinks.log_artifact(self.checkpoints.best, "checkpoints")
            summary["sinks"] = self.sinks.finish(status, summary)
            local = summary["sinks"].get(self.sinks.local.name, "ok")
            if local != "ok":
                message = f"{message}; summary.json could not be written ({local})".lstrip("; ")
        if pending is not None:
            raise pending
        return RunResult(self.run_dir, status, message, summary)

    def _summary(self, status: str, message: str, started: float) -> dict[str, Any]:
        from qsight.quantum.cost import quantum_costs

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
            "skipped_images": self.data.skipped_images(),
            "class_names": list(self.data.class_names),
            "quantum": quantum_costs(self.model.heads.items(), len(self.data.train_labels),
                                     Path(self.spec.output.root) / "cache"),
            **({"tags": dict(self.tags)} if self.tags else {}),
            "parameters": head_parameters(dict(self.model.heads.items())),
        }

    def _test(self) -> dict[str, Any]:
        """The test split, once, on the model the run ends with: summary.json's test entries (or none)."""
        train = self.spec.train
        return run_test_split(self.model, self.data, self.sinks, self.run_dir, self.trainer.device,
                              ensemble_heads=self.spec.stages[-1].heads, seed=self.spec.seed,
                              batch_size=train.eval_batch_size or train.batch_size, num_workers=train.num_workers,
                              step=self.trainer.state.global_step, limit=1 if self.trainer.dry_run else None)

    def _write_error(self, text: str) -> None:
        """The traceback goes to error.log and run.log (not the terminal: the CLI says what failed)."""
        if self.dist.is_main:
            try:
                write_atomic(RunLayout(self.run_dir).error_log, text)
            except OSError as exc:
                log.warning("could not write error.log: %s", exc)
        log.info("run failed:\n%s", text)


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
        "test_size": len(data.test_labels),
    }
