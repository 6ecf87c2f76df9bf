"""Launch a run: resolve spec and folder (new or resumed), build the Experiment, execute it."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from qsight.config.spec import ExperimentSpec, load_spec
from qsight.errors import BadInputError, RunFailedError
from qsight.experiment.result import RunResult
from qsight.runs.layout import RunLayout

log = logging.getLogger("qsight")


def new_run_id() -> str:
    """Sortable and unique: ``20261125-101500-3fa2``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def resolve_run(
    spec_path: Path | None, overrides: Sequence[str], run_dir: Path | None, resume: Path | None
) -> tuple[ExperimentSpec, Path, bool]:
    """The spec to run, its folder, and whether it resumes. Bad combinations are bad input."""
    if resume is not None:
        if overrides or run_dir is not None:
            raise BadInputError("--resume continues a run as it was: drop --set and --run-dir")
        layout = RunLayout(resume)
        if not layout.spec.is_file():
            raise BadInputError(f"{resume}: not a qsight run folder (no spec.toml)")
        if not (layout.checkpoints / "last.pt").is_file():
            raise BadInputError(f"{resume}: no checkpoints/last.pt to resume from")
        spec = load_spec(layout.spec)
        if spec_path is not None and load_spec(spec_path).name != spec.name:
            raise BadInputError(f"{spec_path}: experiment differs from the one in {resume}/spec.toml")
        return spec, resume, True
    if spec_path is None:
        raise BadInputError("missing SPEC (an experiment TOML file), or --resume RUN_DIR")
    spec = load_spec(spec_path, overrides)
    if run_dir is None:
        run_dir = Path(spec.output.root) / "runs" / spec.name / new_run_id()
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise BadInputError(f"--run-dir {run_dir}: folder is not empty (use --resume to continue a run)")
    return spec, run_dir, False


def trim_metrics(run_dir: Path, spec: ExperimentSpec, stage_index: int, epoch: int) -> None:
    """Drop metric lines logged after the checkpoint a resumed run restarts from."""
    path = RunLayout(run_dir).metrics
    if not path.is_file():
        return
    order = {s.name: i for i, s in enumerate(spec.stages)}
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        pos = (order.get(rec.get("stage"), 0), int(rec.get("epoch", 0)))
        if pos[0] < stage_index or (pos[0] == stage_index and pos[1] <= epoch):
            kept.append(line)
    path.write_text("".join(k + "\n" for k in kept))


def run_experiment(
    spec_path: Path | None,
    overrides: Sequence[str],
    *,
    run_dir: Path | None = None,
    resume: Path | None = None,
    dry_run: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run (or resume) one experiment; returns how it ended. Bad input raises `BadInputError`."""
    spec, folder, resuming = resolve_run(spec_path, overrides, run_dir, resume)
    from qsight.experiment.build import Experiment

    exp = Experiment.build(spec, folder, dry_run=dry_run, progress=progress, resumed=resuming)
    if resuming:
        state = exp.resume()
        trim_metrics(folder, spec, state.stage_index, state.epoch)
    return exp.execute()


__all__ = ["RunFailedError", "RunResult", "new_run_id", "resolve_run", "run_experiment", "trim_metrics"]
