"""``qsight runs list|compare|prune|archive`` and ``qsight report``: living with many run folders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from qsight.cli.output import Format, err, exit_codes, out
from qsight.errors import BadInputError
from qsight.metric_names import ENSEMBLE

if TYPE_CHECKING:
    from qsight.runs.catalog import Estimate

runs_app = typer.Typer(
    help="List, compare, prune and archive run folders (under --root, default ./reports).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RootOpt = Annotated[Path, typer.Option("--root", help="Reports root holding runs/<experiment>/<run-id>/.")]
FormatOpt = Annotated[Format, typer.Option("--format", help="table or json.")]
RunArg = Annotated[str, typer.Argument(help="A run folder, or a run id (or unique prefix) under --root.")]
DEFAULT_ROOT = Path("reports")
_STATUS_STYLE = {"completed": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}


@contextmanager
def _option(flag: str) -> Iterator[None]:
    """Name the option whose value a library call refuses: ``--older-than '30 days': ...``."""
    try:
        yield
    except BadInputError as exc:
        raise BadInputError(f"{flag} {exc}") from None


def _print_table(table: Table) -> None:
    """Print whole rows: widen past the terminal rather than wrap or cut cells."""
    from rich.measure import Measurement

    needed = Measurement.get(out, out.options.update_width(1000), table).maximum
    width = out.width
    out.width = max(width, needed)
    try:
        out.print(table)
    finally:
        out.width = width


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _estimate(value: Estimate | None) -> str:
    return "-" if value is None else value.text()


@runs_app.command("list")
def list_runs(
    root: RootOpt = DEFAULT_ROOT,
    experiment: Annotated[str | None, typer.Option(help="Only runs of this experiment.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    format_: FormatOpt = Format.table,
) -> None:
    """Every run, newest first: status, start, duration, final QWK per head."""
    from qsight.runs.catalog import format_seconds, run_row
    from qsight.runs.folder import find_runs
    from qsight.runs.layout import STATUSES

    with exit_codes():
        if status is not None and status not in STATUSES:
            raise BadInputError(f"--status {status!r}: expected one of {', '.join(STATUSES)}")
        rows = [run_row(r) for r in find_runs(root)]
        rows = [r for r in rows if (experiment is None or r.experiment == experiment)
                and (status is None or r.status == status)]
        if format_ is Format.json:
            typer.echo(json.dumps([r.as_json() for r in rows], indent=2))
            return
        if not rows:
            err.print(f"no runs under {root}", highlight=False)
            return
        heads = list(dict.fromkeys(h for r in rows for h in r.heads))
        tested = list(dict.fromkeys(h for r in rows for h in r.test))
        title = f"runs under {root} (final validation QWK per head"
        title += "; test QWK [95 % interval])" if tested else ")"
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("experiment", "run id", "status", "started", "duration"):
            table.add_column(col, no_wrap=True)
        for head in heads:
            table.add_column(head, justify="right")
        table.add_column("ensemble acc", justify="right")
        for head in tested:
            table.add_column(f"{head} test", justify="right", no_wrap=True)
        for r in rows:
            style = _STATUS_STYLE.get(r.status, "")
            started = (r.started or "-").replace("T", " ")[:16]  # UTC
            qwks = [_fmt(r.heads.get(h, {}).get("qwk")) for h in heads]
            acc = _fmt(r.heads.get(ENSEMBLE, {}).get("accuracy"))
            tests = [_estimate(r.test.get(h, {}).get("qwk")) for h in tested]
            status = f"[{style}]{r.status}[/]" + (" [dim](dry run)[/]" if r.dry_run else "")
            table.add_row(r.experiment, r.run_id, status, started, format_seconds(r.seconds),
                          *qwks, acc, *tests)
        _print_table(table)


@runs_app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more run folders or run ids.")],
    root: RootOpt = DEFAULT_ROOT,
    format_: FormatOpt = Format.table,
) -> None:
    """Final metrics per head side by side, and the spec keys whose values differ."""
    from qsight.runs.catalog import comparison
    from qsight.runs.folder import open_run

    with exit_codes():
        if len(runs) < 2:
            raise BadInputError("compare needs at least two runs")
        folders = [open_run(r, root) for r in runs]
        data = comparison(folders)
        if format_ is Format.json:
            typer.echo(json.dumps(data, indent=2, default=str))
            return
        _print_comparison(data)


def _print_comparison(data: dict[str, Any]) -> None:
    names = [r["run_id"] for r in data["runs"]]
    for head, metrics in data["metrics"].items():
        table = Table(title=f"{head} (final validation)", title_justify="left")
        table.add_column("metric")
        for name in names:
            table.add_column(name, justify="right")
        for metric, values in metrics.items():
            best = max((v for v in values if v is not None), default=None)
            cells = [f"[bold]{_fmt(v)}[/]" if v is not None and v == best and metric != "ece" else _fmt(v)
                     for v in values]
            table.add_row(metric, *cells)
        _print_table(table)
    _print_test_comparison(names, data["test"])
    diff = data["spec_differences"]
    if not diff:
        out.print("specs: identical")
        return
    table = Table(title="spec differences", title_justify="left")
    table.add_column("key")
    for name in names:
        table.add_column(name)
    for key, values in diff.items():
        table.add_row(key, *("-" if v is None else json.dumps(v) for v in values))
    _print_table(table)


def _print_test_comparison(names: list[str], test: dict[str, dict[str, list[dict[str, Any] | None]]]) -> None:
    from qsight.runs.catalog import Estimate

    for head, metrics in test.items():
        table = Table(title=f"{head} (test, 95 % bootstrap interval)", title_justify="left")
        table.add_column("metric")
        for name in names:
            table.add_column(name, justify="right", no_wrap=True)
        for metric, values in metrics.items():
            cells = [_estimate(None if v is None else Estimate(v["value"], _interval(v.get("ci")))) for v in values]
            table.add_row(metric, *cells)
        _print_table(table)


def _interval(ci: Any) -> tuple[float, float] | None:
    return (float(ci[0]), float(ci[1])) if isinstance(ci, list) and len(ci) == 2 else None


@runs_app.command()
def prune(
    runs: Annotated[list[str] | None, typer.Argument(help="Only these runs (default: every run under --root).")]
    = None,
    root: RootOpt = DEFAULT_ROOT,
    keep_epochs: Annotated[str, typer.Option(help="Epoch visualizations kept per stage: best, last or both.")]
    = "best,last",
    older_than: Annotated[str | None, typer.Option(help="Only runs started at least this long ago: 30d, 12h, 2w.")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be freed; remove nothing.")] = False,
) -> None:
    """Remove per-epoch visualizations and intermediate checkpoints of finished runs.

    Kept always: spec, environment, metrics, summary, best.pt and last.pt, and the best/last
    epoch of each stage. Running and interrupted runs are never touched.
    """
    from qsight.runs.folder import find_runs, open_run
    from qsight.runs.prune import apply_prune, format_bytes, parse_age, parse_keep, plan_prune
    from qsight.runs.prune import older_than as select_older

    with exit_codes():
        with _option("--keep-epochs"):
            keep = parse_keep(keep_epochs)
        with _option("--older-than"):
            age = parse_age(older_than) if older_than else None
        folders = [open_run(r, root) for r in runs] if runs else find_runs(root)
        plans = [plan_prune(r, keep) for r in select_older(folders, age)]
        for plan in plans:
            label = f"{plan.run.experiment}/{plan.run.run_id}"
            if plan.skipped:
                out.print(f"skip  {label}: {plan.skipped}", highlight=False)
            elif plan.remove:
                out.print(f"{'would free' if dry_run else 'free'}  {label}: {format_bytes(plan.freed)} "
                          f"({len(plan.remove)} folders/files)", highlight=False)
        touched = sum(1 for p in plans if p.remove)
        skipped = sum(1 for p in plans if p.skipped)
        tail = f"in {touched} of {len(plans)} runs ({skipped} skipped)"
        if dry_run:
            out.print(f"dry run: {format_bytes(sum(p.freed for p in plans))} would be freed {tail}", highlight=False)
        else:
            out.print(f"freed {format_bytes(apply_prune(plans))} {tail}", highlight=False)


@runs_app.command()
def archive(
    run: RunArg,
    to: Annotated[Path, typer.Option("--to", help="The archive to write (FILE.tar.gz).")],
    root: RootOpt = DEFAULT_ROOT,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing archive.")] = False,
) -> None:
    """One .tar.gz with the run folder and its metadata; restore with tar -xzf FILE -C reports/runs."""
    from qsight.runs.archive import ArchiveTargetError, archive_run
    from qsight.runs.folder import open_run
    from qsight.runs.prune import format_bytes

    with exit_codes():
        folder = open_run(run, root)
        try:
            meta = archive_run(folder, to, force=force)
        except ArchiveTargetError as exc:
            hint = " (add --force to replace it)" if exc.exists else ""
            raise BadInputError(f"--to {exc}{hint}") from None
        size = format_bytes(to.stat().st_size)
        out.print(f"archived {meta['experiment']}/{meta['run_id']} ({len(meta['files'])} files) to {to} ({size})",
                  highlight=False)


def report(
    run: RunArg,
    root: RootOpt = DEFAULT_ROOT,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the page here (default RUN/report.html).")]
    = None,
) -> None:
    """A self-contained HTML page of a run: curves, confusion matrices, Grad-CAM, metrics, spec."""
    from qsight.runs.folder import open_run
    from qsight.runs.report import write_report

    with exit_codes():
        if out_file is not None and not out_file.parent.is_dir():
            raise BadInputError(f"--out {out_file}: folder {out_file.parent} does not exist")
        page = write_report(open_run(run, root), out_file)
        out.print(f"report: {page}", highlight=False)
