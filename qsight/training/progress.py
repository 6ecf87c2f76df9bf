"""Progress bars for epochs and batches (rich, stderr, silent when not a terminal)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class ProgressReporter(Protocol):
    """What the Trainer reports while it works."""

    def start_epoch(self, stage: str, epoch: int, epochs: int, batches: int) -> None: ...

    def advance(self, losses: Mapping[str, float], samples_per_s: float) -> None: ...

    def end_epoch(self) -> None: ...

    def close(self) -> None: ...


class SilentProgress:
    """Reports nothing (non-terminals, non-zero ranks, tests)."""

    def start_epoch(self, stage: str, epoch: int, epochs: int, batches: int) -> None:
        pass

    def advance(self, losses: Mapping[str, float], samples_per_s: float) -> None:
        pass

    def end_epoch(self) -> None:
        pass

    def close(self) -> None:
        pass


class RichProgress:
    """One bar per epoch with per-head losses and throughput."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console or Console(stderr=True),
            transient=False,
        )
        self.progress.start()
        self.task: TaskID | None = None

    def start_epoch(self, stage: str, epoch: int, epochs: int, batches: int) -> None:
        desc = f"{stage} {epoch + 1}/{epochs}"
        self.task = self.progress.add_task(desc, total=batches, info="")

    def advance(self, losses: Mapping[str, float], samples_per_s: float) -> None:
        if self.task is None:
            return
        info = " ".join(f"{k}={v:.3f}" for k, v in losses.items()) + f" {samples_per_s:.0f} img/s"
        self.progress.update(self.task, advance=1, info=info)

    def end_epoch(self) -> None:
        self.task = None

    def close(self) -> None:
        self.progress.stop()


def make_progress(enabled: bool) -> ProgressReporter:
    """Rich bars on an interactive stderr, otherwise silence."""
    console = Console(stderr=True)
    if enabled and console.is_terminal:
        return RichProgress(console)
    return SilentProgress()
