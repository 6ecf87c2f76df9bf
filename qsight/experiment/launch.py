"""Launch a run: resolve spec and folder (new or resumed), build the Experiment, execute it."""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from qsight.config.spec import ExperimentSpec
from qsight.config.toml_io import load_run_spec, load_spec
from qsight.errors import BadInputError, RunFailedError
from qsight.experiment.result import RunResult
from qsight.logs import run_log
from qsight.runs.layout import RunLayout, lock_is_live, read_lock

if TYPE_CHECKING:
    from qsight.training.trainer import EpochHook

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
            raise BadInputError("a resumed run continues as it was: no overrides and no other run folder")
        return _resumable(resume, spec_path), resume, True
    if spec_path is None:
        raise BadInputError("no experiment spec given, and no run folder to resume")
    spec = load_spec(spec_path, overrides)
    if run_dir is None:
        check_output_place(Path(spec.output.root), "output.root")
        run_dir = Path(spec.output.root) / "runs" / spec.name / new_run_id()
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        raise BadInputError(f"run folder {run_dir}: not empty (resume the run there, or choose another folder)")
    check_output_place(run_dir, "run folder")
    return spec, run_dir, False


def _follower_run(
    spec_path: Path | None, overrides: Sequence[str], run_dir: Path | None, resume: Path | None
) -> tuple[ExperimentSpec, Path, bool]:
    """`resolve_run` for a torchrun process other than rank 0: the same spec, no checks, nothing created.

    The folder is a placeholder when rank 0 names it (`Experiment.build` takes rank 0's).
    """
    if resume is not None:
        return load_run_spec(RunLayout(resume).spec), resume, True
    if spec_path is None:
        raise BadInputError("no experiment spec given, and no run folder to resume")
    spec = load_spec(spec_path, overrides)
    return spec, run_dir or Path(spec.output.root) / "runs" / spec.name / "pending", False


def _resumable(folder: Path, spec_path: Path | None) -> ExperimentSpec:
    """The spec of a run that may be resumed: interrupted (not live, not finished), same spec if one is given."""
    layout = RunLayout(folder)
    if not layout.spec.is_file():
        raise BadInputError(f"{folder}: not a qsight run folder (no spec.toml)")
    lock = read_lock(folder)
    if lock is not None and lock_is_live(lock):
        raise BadInputError(
            f"{folder}: the run is still going (pid {lock.get('pid')} on {lock.get('host')}); "
            "resume it only after that process has ended"
        )
    ended = _summary_status(layout.summary) if lock is None else None
    if ended == "completed":
        raise BadInputError(f"{folder}: the run has completed; there is nothing to resume")
    if not (layout.checkpoints / "last.pt").is_file():
        raise BadInputError(f"{folder}: no checkpoints/last.pt to resume from")
    spec = load_run_spec(layout.spec)
    if spec_path is not None:
        given = load_spec(spec_path)
        differ = spec_differences(spec, given)
        if differ:
            raise BadInputError(
                f"{spec_path}: differs from {layout.spec} in {', '.join(differ[:8])}"
                + (f" (+{len(differ) - 8} more)" if len(differ) > 8 else "")
                + "; a run resumes with the spec it started with (give no SPEC, or start a new run)"
            )
    check_output_place(folder, "run folder")
    return spec


def _summary_status(path: Path) -> str | None:
    try:
        status = json.loads(path.read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return str(status) if status else None


def spec_differences(a: ExperimentSpec, b: ExperimentSpec) -> list[str]:
    """Dotted keys (the notation of ``--set``) whose values differ between two specs."""
    from qsight.runs.catalog import flatten

    fa, fb = flatten(a.model_dump(mode="json")), flatten(b.model_dump(mode="json"))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k, _ABSENT) != fb.get(k, _ABSENT))


_ABSENT = object()


def check_output_place(folder: Path, what: str) -> None:
    """`folder` can hold a run: creatable, a folder (not a file), writable. Otherwise one clear message."""
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise BadInputError(f"{what} {folder}: {parent} is a file, not a folder")
        if parent.exists():
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise BadInputError(f"{what} {folder}: cannot write there ({exc.strerror or exc})") from None


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
        stage = order.get(rec.get("stage"))
        if stage is None:
            continue  # the test split's line: written after every stage, written again at the end
        if stage < stage_index or (stage == stage_index and int(rec.get("epoch") or 0) <= epoch):
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
    tags: Mapping[str, str] | None = None,
    epoch_hooks: Sequence[EpochHook] = (),
) -> RunResult:
    """Run (or resume) one experiment; returns how it ended. Bad input raises `BadInputError`.

    The backbone is probed before any data is built; rank 0 logs to ``<run folder>/run.log``.
    `tags` (e.g. a sweep's name and trial) go to environment.json and summary.json; `epoch_hooks`
    are called after every epoch with (stage, epoch, metrics) and may stop the run (`RunStoppedError`).
    """
    main = os.environ.get("RANK", "0") == "0"
    if main:
        spec, folder, resuming = resolve_run(spec_path, overrides, run_dir, resume)
    else:  # rank 0 checks and creates the folder; the others learn its name from rank 0 and write nothing
        spec, folder, resuming = _follower_run(spec_path, overrides, run_dir, resume)
    from qsight.experiment.build import Experiment
    from qsight.models.probe import probe_spec

    with run_log(folder) if main else nullcontext():
        log.info("%s run %s of %s in %s", "resuming" if resuming else "starting", folder.name, spec.name, folder)
        probe_spec(spec)
        exp = Experiment.build(spec, folder, dry_run=dry_run, progress=progress, resumed=resuming)
        exp.trainer.epoch_hooks.extend(epoch_hooks)
        if tags:
            exp.tag(tags)
        if resuming:
            state = exp.resume()
            if main:
                trim_metrics(folder, spec, state.stage_index, state.epoch)
        return exp.execute()


__all__ = [
    "RunFailedError",
    "RunResult",
    "check_output_place",
    "new_run_id",
    "resolve_run",
    "run_experiment",
    "spec_differences",
    "trim_metrics",
]
