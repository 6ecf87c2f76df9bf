"""A trained model rebuilt from a run folder: the one place predict, evaluate, export and the MLflow Model load it.

The run's ``spec.toml`` (with optional ``--set`` overrides, e.g. another sampler) builds the
model; a weights-only checkpoint (`qsight.training.checkpoints`) fills it; the heads active in the
checkpoint's stage are switched on. Images are preprocessed exactly as the run's evaluation
transform preprocesses its validation images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qsight.config.spec import ExperimentSpec
from qsight.config.toml_io import load_run_spec
from qsight.data.images import load_rgb
from qsight.data.transforms import ResizeMode, Transform, display_transform, eval_transform
from qsight.errors import BadInputError
from qsight.metric_names import ENSEMBLE
from qsight.models.hybrid import HybridModel, build_model
from qsight.runs.layout import RunLayout
from qsight.training.checkpoints import Checkpoint, CheckpointStore, read_checkpoint

log = logging.getLogger("qsight.serving")

#: Named checkpoints of a run: ``best`` (best epoch of the last stage; what a run uploads) and ``last``.
CHECKPOINT_NAMES = ("last", "best")
Triple = tuple[float, float, float]
#: The normalisation every built-in dataset applies (ImageNet statistics).
MEAN: Triple = (0.485, 0.456, 0.406)
STD: Triple = (0.229, 0.224, 0.225)


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    """``last``: the model the run ended with (after any restore_best; what its summary and test split
    describe), ``best``: the best epoch of the latest stage that improved, each standing in for the
    other when absent; or a path to a checkpoint file."""
    store = CheckpointStore(run_dir)
    if which in CHECKPOINT_NAMES:
        wanted, other = (store.last, store.best) if which == "last" else (store.best, store.last)
        return wanted if wanted.is_file() or not other.is_file() else other
    return Path(which)


def choose_device(asked: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; any other torch device name as it is."""
    if asked == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(asked)
    except RuntimeError:
        raise BadInputError(f"device {asked!r}: not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {asked!r}: no CUDA device is available")
    return device


def normalization(spec: ExperimentSpec) -> tuple[Triple, Triple]:
    """Mean and std the run's images were normalised with."""
    return MEAN, STD


def input_size(spec: ExperimentSpec) -> tuple[int, ResizeMode]:
    """The model's input size and how an image is fitted to it (the run's ``resize``; center-crop
    for datasets generated at the size, which leaves images of that size untouched)."""
    size = getattr(spec.data, "image_size", None)
    if not isinstance(size, int):
        raise BadInputError("data: the run's dataset has no image_size, so its images cannot be preprocessed")
    resize = getattr(spec.data, "resize", None)
    return size, resize if resize in ("center-crop", "stretch") else "center-crop"


@dataclass
class TrainedModel:
    """A run's model with its weights, in eval mode, and how to turn image files into its input."""

    run_dir: Path
    spec: ExperimentSpec
    model: HybridModel
    class_names: tuple[str, ...]
    checkpoint: Checkpoint
    device: torch.device
    overrides: tuple[str, ...] = ()

    @property
    def heads(self) -> tuple[str, ...]:
        """The active heads; predictions also carry the ``ensemble``."""
        return self.model.active_heads

    @property
    def targets(self) -> tuple[str, ...]:
        """Every output a prediction can be read from: the active heads, then the ensemble."""
        return (*self.heads, ENSEMBLE)

    def check_target(self, name: str, what: str = "head") -> str:
        """`name` if the model outputs it, else bad input listing what it outputs."""
        if name not in self.targets:
            raise BadInputError(f"{what} {name!r}: the run's model outputs {', '.join(self.targets)}")
        return name

    @cached_property
    def transform(self) -> Transform:
        """Image (PIL or uint8 tensor) → normalised model input, as the run evaluated its images."""
        size, resize = input_size(self.spec)
        mean, std = normalization(self.spec)
        return eval_transform(size, mean, std, resize)

    def display(self, path: Path) -> Tensor:
        """The image as the model sees it before normalisation: uint8 (3, size, size), for overlays."""
        size, resize = input_size(self.spec)
        out: Tensor = display_transform(size, resize)(load_rgb(path, size))
        return out

    def load_image(self, path: Path) -> Tensor:
        """One image file as model input (3, size, size); an unreadable file raises `DataError`."""
        return self.transform(load_rgb(path, input_size(self.spec)[0]))

    def probabilities(self, images: Tensor) -> dict[str, Tensor]:
        """Class probabilities (B, K) of every active head and the ensemble, on the CPU."""
        with torch.inference_mode():
            out = self.model(images.to(self.device))
        probs = {h: torch.softmax(v.float(), dim=1).cpu() for h, v in out.heads.items()}
        probs[ENSEMBLE] = out.ensemble.float().exp().cpu()
        return probs


def class_names(run_dir: Path, spec: ExperimentSpec) -> tuple[str, ...]:
    """The run's class names, from its summary.json (else by building its dataset)."""
    try:
        names = json.loads(RunLayout(run_dir).summary.read_text(encoding="utf-8")).get("class_names")
    except (OSError, ValueError, AttributeError):
        names = None
    if isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names):
        return tuple(names)
    from qsight.experiment.build import build_data

    log.info("%s: no class names in summary.json; building the run's dataset for them", run_dir)
    return build_data(spec).class_names


def active_heads(spec: ExperimentSpec, stage: str) -> tuple[str, ...]:
    """The heads of the checkpoint's stage (every head when the spec has no such stage)."""
    for s in spec.stages:
        if s.name == stage:
            return tuple(s.heads)
    return tuple(spec.model.heads)


def load_trained(
    run_dir: Path, overrides: Sequence[str] = (), *, checkpoint: str = "last", device: str = "cpu"
) -> TrainedModel:
    """Rebuild a run's model from its spec (plus `overrides`) and fill it from a weights-only checkpoint."""
    layout = RunLayout(run_dir)
    if not layout.spec.is_file():
        raise BadInputError(f"{run_dir}: not a qsight run folder (no spec.toml)")
    spec = load_run_spec(layout.spec, overrides)
    ckpt = read_checkpoint(checkpoint_path(run_dir, checkpoint))
    names = class_names(run_dir, spec)
    model = build_model(spec.model, len(names))
    ckpt.restore_model(model)
    target = choose_device(device)
    model.to(target).eval()
    model.set_active(active_heads(spec, ckpt.stage))
    log.info("loaded %s (stage %s, epoch %d) of %s on %s", ckpt.path.name, ckpt.stage, ckpt.epoch, run_dir, target)
    return TrainedModel(run_dir, spec, model, names, ckpt, target, tuple(overrides))


def describe(trained: TrainedModel) -> dict[str, Any]:
    """Where a result came from: run, checkpoint, its stage and epoch, overrides."""
    ck = trained.checkpoint
    return {"run_dir": str(trained.run_dir), "checkpoint": str(ck.path), "stage": ck.stage, "epoch": ck.epoch,
            "overrides": list(trained.overrides)}
