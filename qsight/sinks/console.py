"""A compact rich table of validation metrics per epoch, on stderr."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from qsight.metric_names import order_heads, parse_metric
from qsight.sinks.base import BaseSink, RunInfo

if TYPE_CHECKING:
    from rich.console import Console


def pick_columns(names: set[str], preferred: Sequence[str], limit: int) -> list[str]:
    """Preferred metric names that are present, else every present name; at most `limit`."""
    chosen = [c for c in preferred if c in names] or sorted(names)
    return chosen[:limit]


class ConsoleSink(BaseSink):
    """Prints one table per validation epoch (heads × metrics); quiet about training steps."""

    def __init__(
        self,
        name: str = "console",
        strict: bool = False,
        columns: Sequence[str] = (),
        max_columns: int = 8,
        file: IO[str] | None = None,
    ) -> None:
        super().__init__(name, strict)
        self.columns = tuple(columns)
        self.max_columns = max_columns
        self._file = file
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        """The rich console (stderr unless a file was given)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self._file, stderr=self._file is None, highlight=False)
        return self._console

    def start(self, run: RunInfo) -> None:
        """One line naming the run and its folder."""
        self.console.print(f"[bold]{run.experiment}[/] run [cyan]{run.run_id}[/] → {run.run_dir}")

    def log_metrics(self, metrics: Mapping[str, float], step: int, context: Mapping[str, Any]) -> None:
        """Print a table when the metrics hold validation (else test) results; ignore the rest."""
        rows: dict[str, dict[str, float]] = {}
        parts = [(p, v) for p, v in ((parse_metric(k), v) for k, v in metrics.items()) if p]
        shown = "val" if any(p.split == "val" for p, _ in parts) else "test"
        for (split, head, metric), value in parts:
            if split == shown:
                rows.setdefault(head, {})[metric] = value
        for (split, head, metric), value in parts:
            if split == "train" and metric == "loss" and head in rows:
                rows[head]["train_loss"] = value
        if rows:
            self.console.print(self._table(rows, step, context))

    def _table(self, rows: dict[str, dict[str, float]], step: int, context: Mapping[str, Any]) -> Any:
        from rich.table import Table

        names = {m for r in rows.values() for m in r}
        cols = pick_columns(names, self.columns, self.max_columns)
        epoch = context.get("epoch")
        where = f"{context.get('stage', '?')} · epoch {epoch}" if epoch is not None else str(context.get("stage", "?"))
        title = f"{where} · step {step}"
        table = Table(title=title, title_justify="left", box=None, pad_edge=False)
        table.add_column("head", style="bold")
        for col in cols:
            table.add_column(col, justify="right")
        for head in order_heads(rows):
            table.add_row(head, *(_fmt(rows[head].get(c)) for c in cols))
        return table

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        """The status, and the sinks that failed."""
        colour = {"completed": "green", "failed": "red"}.get(status, "yellow")
        self.console.print(f"run [{colour}]{status}[/]")
        for sink, state in dict(summary.get("sinks", {})).items():
            if state != "ok":
                self.console.print(f"  sink [yellow]{sink}[/]: {state}")


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
