"""Weights & Biases sink: offline by default, every file under <run folder>/wandb/.

A qsight run is one W&B run, however many processes it takes: the W&B run id is drawn once and
kept in ``<run folder>/wandb/qsight-wandb.json``; a resumed process (`RunInfo.resumed`) continues
that W&B run (``resume="allow"``). Offline, each process writes its own ``offline-run-<time>-<id>``
folder; ``wandb sync`` uploads the folders of one id, in start order, as one run. A resumed process
sends again the steps after its checkpoint: a killed process loses what W&B had not yet written
(its open step, and up to `FLUSH_SECONDS` of data), so only the steps an online run already
holds (`starting_step`) are skipped.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qsight.runs.layout import write_atomic
from qsight.sinks.base import BaseSink, RunInfo
from qsight.sinks.params import WandbParams

EXIT_CODES = {"completed": 0, "failed": 1, "interrupted": 130}
STATE_FILE = "qsight-wandb.json"
FLUSH_SECONDS = 1.0


def resolve_mode(asked: str) -> str:
    """'online' only when asked and an API key is in the environment; else offline/disabled."""
    if asked == "online" and os.environ.get("WANDB_API_KEY"):
        return "online"
    return "disabled" if asked == "disabled" else "offline"


def artifact_name(*parts: str) -> str:
    """A W&B artifact name (letters, digits, '-', '_', '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(p for p in parts if p)).strip("-") or "file"


class WandbSink(BaseSink):
    """Logs metrics, `wandb.Image`s, `wandb.Table`s and artifacts to one W&B run."""

    def __init__(self, params: WandbParams, name: str = "wandb") -> None:
        super().__init__(name, params.strict)
        self.params = params
        self.mode = resolve_mode(params.mode)
        self._run: Any = None
        self.run_id = ""
        self._first_step = 0  # a resumed online run holds the steps before this one
        self._run_dir: Path | None = None

    def start(self, run: RunInfo) -> None:
        """`wandb.init` in the run folder, offline unless online is asked and possible.

        A dry run gets the tag ``dry_run``; ``config.dry_run`` says whether it is one.
        """
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        self._run_dir = run.run_dir
        import wandb

        state = run.run_dir / "wandb" / STATE_FILE
        earlier = read_run_id(state) if run.resumed else None
        self.run_id = earlier or secrets.token_hex(6)

        settings = wandb.Settings(
            silent=True, quiet=True, console="off", disable_git=True, disable_code=True,
            save_code=False, x_disable_stats=True, x_disable_machine_info=True,
            init_timeout=self.params.init_timeout, **_flush_often(wandb.Settings),
        )  # fmt: skip
        tags = [*self.params.tags, *(["dry_run"] if run.dry_run else [])]
        if earlier is None:
            write_atomic(state, json.dumps({"id": self.run_id}) + "\n")
        try:
            self._run = self._init(wandb, run, settings, tags)
        except Exception as e:
            if "is in use" in str(e) and os.environ.get("WANDB_SERVICE"):
                raise RuntimeError(
                    f"{e}: this process joined the W&B service of another (WANDB_SERVICE is set), which "
                    "still holds the run of a process that ended without closing it; unset WANDB_SERVICE "
                    "or end the process that started that service"
                ) from e
            raise
        self._first_step = int(getattr(self._run, "starting_step", 0) or 0)

    def _init(self, wandb: Any, run: RunInfo, settings: Any, tags: list[str]) -> Any:
        return wandb.init(
            project=self.params.project or run.experiment,
            entity=self.params.entity if self.mode == "online" else None,
            name=run.run_id,
            id=self.run_id,
            resume="allow",
            dir=str(run.run_dir),
            mode=self.mode,
            config={**run.spec, "dry_run": run.dry_run},
            tags=tags or None,
            settings=settings,
            reinit="create_new",
        )

    def _due(self, step: int) -> bool:
        """False for a step a resumed online run already holds (W&B would drop it with a warning)."""
        return step >= self._first_step

    @property
    def wandb_run(self) -> Any:
        """The W&B run object (after `start`)."""
        if self._run is None:
            raise RuntimeError("wandb sink not started")
        return self._run

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None:
        """Metrics at `step`, with the epoch beside them."""
        if not self._due(step):
            return
        data: dict[str, Any] = dict(metrics)
        if isinstance(context.get("epoch"), int):
            data["epoch"] = context["epoch"]
        self.wandb_run.log(data, step=step)

    def log_image(self, key: str, path: Path, step: int) -> None:
        """A PNG as `wandb.Image`."""
        if not self._due(step):
            return
        import wandb

        self.wandb_run.log({key: wandb.Image(str(path), caption=Path(path).name)}, step=step)

    def log_table(self, key: str, path: Path, step: int) -> None:
        """A CSV as `wandb.Table`."""
        if not self._due(step):
            return
        import pandas as pd
        import wandb

        self.wandb_run.log({key: wandb.Table(dataframe=pd.read_csv(path))}, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file or folder as a W&B artifact (type 'model' for checkpoints).

        The files are referenced in place (policy 'immutable': no staging copy outside
        the run folder), so log files that are not rewritten later, e.g. a final checkpoint.
        """
        if not self.params.log_artifacts:
            return
        import wandb

        path = Path(path)
        kind = "model" if path.suffix in {".pt", ".pth", ".ckpt"} else "file"
        art = wandb.Artifact(artifact_name(self.wandb_run.name or "", artifact_path or "", path.stem), kind)
        if path.is_dir():
            art.add_dir(str(path), policy="immutable")
        else:
            art.add_file(str(path), policy="immutable")
        self.wandb_run.log_artifact(art)

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        """Final, best and test metrics into the W&B summary; exit code from the status."""
        if self._run is None:
            return
        run, self._run = self._run, None
        try:
            from qsight.sinks.run_model import log_wandb_model, model_checkpoint

            if (status == "completed" and self.params.log_artifacts and self._run_dir is not None
                    and model_checkpoint(self._run_dir) is not None):
                log_wandb_model(run, artifact_name(run.name or "", "model"), self._run_dir, summary)
            run.summary.update({"status": status, **dict(summary.get("final", {}))})
            run.summary.update({f"best/{k}": v for k, v in dict(summary.get("best", {})).items()})
            run.summary.update(dict(summary.get("test", {})))
        finally:
            run.finish(exit_code=EXIT_CODES.get(status, 1))


def _flush_often(settings: Any) -> dict[str, float]:
    """Write the offline file every second (W&B's default, 15 s, loses that much to a killed process)."""
    name = "x_transaction_log_flush_interval"  # a recent W&B setting; unknown settings are refused
    return {name: FLUSH_SECONDS} if name in getattr(settings, "model_fields", {}) else {}


def read_run_id(path: Path) -> str | None:
    """The W&B run id an earlier process of the run saved; None when absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    run_id = data.get("id") if isinstance(data, dict) else None
    return run_id if isinstance(run_id, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", run_id) else None
