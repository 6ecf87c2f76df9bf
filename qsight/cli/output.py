"""What every ``qsight`` command shares: the consoles, output formats and exit-code handling."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

import typer
from rich.console import Console
from rich.markup import escape

from qsight.errors import QsightError

# soft wrap: a line longer than the terminal (a run folder's path, say) stays one line to copy
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class Format(StrEnum):
    table = "table"
    json = "json"


@contextmanager
def exit_codes() -> Iterator[None]:
    """Turn qsight errors into one clear message and the contract's exit code."""
    try:
        yield
    except QsightError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
