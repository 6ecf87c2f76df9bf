"""The ``qsight`` command line: parse, call, print, exit code. Nothing else lives here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from qsight.cli.output import Format, err, out
from qsight.cli.output import exit_codes as _exit_codes
from qsight.cli.runs import report, runs_app
from qsight.cli.serving import evaluate, export, predict
from qsight.cli.sweeps import SWEEP_HELP, sweep

app = typer.Typer(
    name="qsight",
    help="Config-driven experiments for hybrid classical + quantum image classifiers (DR grading).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
SpecArg = Annotated[Path, typer.Argument(help="Experiment TOML file, e.g. experiments/hybrid.toml.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override KEY.PATH=VALUE (TOML literal; list indices allowed), e.g. --set stages.0.epochs=2.",
        metavar="KEY.PATH=VALUE",
    ),
]


def _version(value: bool) -> None:
    if value:
        from qsight import __version__

        typer.echo(f"qsight {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show INFO logs on stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Config-driven experiments for hybrid classical + quantum image classifiers (DR grading).

    Logs: warnings on stderr (-v adds INFO, -q keeps errors only); a run's full log is in its run.log.
    """
    from qsight.logs import NORMAL, QUIET, VERBOSE, configure

    configure(VERBOSE if verbose else QUIET if quiet else NORMAL)


@app.command()
def validate(
    spec: SpecArg,
    set_: SetOpt = None,
    schema_only: Annotated[
        bool, typer.Option("--schema-only", help="Check keys and values only (no torch import, no backbone probe).")
    ] = False,
) -> None:
    """Check a spec (and overrides) without running it: exit 0 valid, 2 invalid.

    Besides keys and values, the backbone is built on PyTorch's meta device and given a dummy batch of
    the configured image size (a few seconds), so an unknown model or a size it cannot take is caught here.
    """
    from qsight.config.toml_io import load_spec, read_toml

    with _exit_codes():
        if _is_sweep(read_toml(spec)):
            _validate_sweep(spec, set_ or [])
            return
        parsed = load_spec(spec, set_ or [])
        if not schema_only:
            from qsight.models.probe import probe_spec

            probe_spec(parsed)
        stages = ", ".join(f"{s.name}({s.epochs})" for s in parsed.stages)
        out.print(f"[green]valid[/] {spec}: experiment {parsed.name!r}, stages {stages}", highlight=False)


def _is_sweep(raw: dict[str, Any]) -> bool:
    from qsight.config.sweep import is_sweep_data

    return is_sweep_data(raw)


def _validate_sweep(path: Path, overrides: list[str]) -> None:
    from qsight.config.sweep import load_sweep
    from qsight.sweeps.aggregate import planned

    sweep = load_sweep(path, overrides)
    out.print(f"[green]valid[/] {path}: sweep {sweep.name!r} of {sweep.base_path.name} "
              f"({sweep.spec.sampler}, {planned(sweep)} trials)", highlight=False)


@app.command()
def run(
    spec: Annotated[
        Path | None, typer.Argument(help="Experiment TOML file (omit with --resume to reuse the run's spec).")
    ] = None,
    set_: SetOpt = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Write the run into exactly this folder.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="One batch per stage through every head, Grad-CAM and sink.")
    ] = False,
) -> None:
    """Train and evaluate one experiment; artifacts go to the run folder, then the sinks."""
    with _exit_codes():
        from qsight.experiment.launch import run_experiment

        result = run_experiment(spec, set_ or [], run_dir=run_dir, resume=resume, dry_run=dry_run)
        speaks = os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 speaks for the run
        if speaks:
            out.print(f"run folder: {result.run_dir}", highlight=False)
        if result.status != "completed":
            if speaks:
                err.print(f"[red]run {result.status}[/]: {result.message}", highlight=False)
            raise typer.Exit(1)


@app.command("list-components")
def list_components(
    kind: Annotated[str | None, typer.Option(help="Only this kind: backbone, head, sampler, dataset, sink.")] = None,
    format_: Annotated[Format, typer.Option("--format", help="table or json.")] = Format.table,
) -> None:
    """Every registered component (built-in and plugins) with its parameters and defaults."""
    from qsight.components import KINDS, load_components
    from registry import unknown_message

    with _exit_codes():
        load_components()
        if kind is not None and kind not in KINDS:
            from qsight.errors import BadInputError

            raise BadInputError("--kind: " + unknown_message("kind", kind, list(KINDS)))
        kinds = [kind] if kind else list(KINDS)
        data = {
            k: [
                {"name": e.name, "summary": e.summary, "origin": e.origin, "params": e.param_rows()}
                for e in KINDS[k].entries()
            ]
            for k in kinds
        }
        if format_ is Format.json:
            typer.echo(json.dumps(data, indent=2, default=str))
        else:
            _print_components(data)


def _print_components(data: dict[str, list[dict[str, Any]]]) -> None:
    for kind, entries in data.items():
        table = Table(title=f"{kind}s", title_justify="left", show_lines=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("summary")
        table.add_column("parameters (default)")
        table.add_column("origin", style="dim")
        for e in entries:
            params = "\n".join(
                f"{p['name']}: {p['type']}" + ("" if p["required"] else f" = {p['default']!r}")
                for p in e["params"]
            )
            table.add_row(e["name"], e["summary"], params or "-", e["origin"])
        out.print(table)


@app.command()
def schema() -> None:
    """Print the JSON schema of experiment specs (all registered components included)."""
    from qsight.config.spec import spec_schema

    with _exit_codes():
        typer.echo(json.dumps(spec_schema(), indent=2))


app.add_typer(runs_app, name="runs")
app.command()(report)
app.command(help=SWEEP_HELP)(sweep)
for _command in (predict, evaluate, export):
    app.command()(_command)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="qsight")


if __name__ == "__main__":  # pragma: no cover
    main()
