"""Weights & Biases sink: offline by default, every file under <run folder>/wandb/."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qsight.sinks.base import BaseSink, RunInfo
from qsight.sinks.params import WandbParams

EXIT_CODES = {"completed": 0, "failed": 1, "interrupted": 130}


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

    def start(self, run: RunInfo) -> None:
        """`wandb.init` in the run folder, offline unless online is asked and possible."""
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        import wandb

        settings = wandb.Settings(
            silent=True, quiet=True, console="off", disable_git=True, disable_code=True,
            save_code=False, x_disable_stats=True, x_disable_machine_info=True,
            init_timeout=self.params.init_timeout,
        )  # fmt: skip
        self._run = wandb.init(
            project=self.params.project or run.experiment,
            entity=self.params.entity if self.mode == "online" else None,
            name=run.run_id,
            dir=str(run.run_dir),
            mode=self.mode,  # type: ignore[arg-type]
            config=dict(run.spec),
            tags=list(self.params.tags) or None,
            settings=settings,
            reinit="create_new",
        )

    @property
    def wandb_run(self) -> Any:
        """The W&B run object (after `start`)."""
        if self._run is None:
            raise RuntimeError("wandb sink not started")
        return self._run

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None:
        """Metrics at `step`, with the epoch beside them."""
        data: dict[str, Any] = dict(metrics)
        if isinstance(context.get("epoch"), int):
            data["epoch"] = context["epoch"]
        self.wandb_run.log(data, step=step)

    def log_image(self, key: str, path: Path, step: int) -> None:
        """A PNG as `wandb.Image`."""
        import wandb

        self.wandb_run.log({key: wandb.Image(str(path), caption=Path(path).name)}, step=step)

    def log_table(self, key: str, path: Path, step: int) -> None:
        """A CSV as `wandb.Table`."""
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
            run.summary.update({"status": status, **dict(summary.get("final", {}))})
            run.summary.update({f"best/{k}": v for k, v in dict(summary.get("best", {})).items()})
            run.summary.update(dict(summary.get("test", {})))
        finally:
            run.finish(exit_code=EXIT_CODES.get(status, 1))
