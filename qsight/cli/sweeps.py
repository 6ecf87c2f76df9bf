"""``qsight sweep``: run a sweep (or join one), show where it stands, write its summary."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from qsight.cli.output import err, exit_codes, out

if TYPE_CHECKING:
    from qsight.config.sweep import Sweep

SWEEP_HELP = """Run a sweep: `qsight sweep SWEEP.toml [--workers N] [--storage URL]`; show it:
`qsight sweep status SWEEP.toml|NAME`; write its HTML page: `qsight sweep report SWEEP.toml|NAME [--out FILE]`.

Each trial is an ordinary run. The same command on other machines with the same --storage
(e.g. postgresql://user@host/db) joins the study; run it again after a kill to resume: finished
trials are kept, trials that were running are run again.
"""


def sweep(
    target: Annotated[
        str, typer.Argument(help="A sweep TOML file, or 'status' / 'report'.", metavar="SWEEP.toml|status|report")
    ],
    ref: Annotated[str | None, typer.Argument(help="With 'status' or 'report': the sweep file or name.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=256, help="Worker processes here.")] = 1,
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL (default: the sweep's, else a journal file).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY.PATH=VALUE", help="Override the base spec for every trial."),
    ] = None,
    root: Annotated[Path, typer.Option("--root", help="Reports root, to find a sweep by name.")] = Path("reports"),
    out_file: Annotated[
        Path | None, typer.Option("--out", help="With 'report': the page's path (default: the sweep's folder).")
    ] = None,
) -> None:
    with exit_codes():
        from qsight.errors import BadInputError

        if target in ("status", "report"):
            if ref is None:
                raise BadInputError(f"sweep {target}: give the sweep file or the sweep's name")
            if target == "status":
                _status(ref, storage, set_ or [], root)
            else:
                _report(ref, storage, set_ or [], root, out_file)
            return
        if ref is not None:
            raise BadInputError(f"unexpected argument {ref!r} after the sweep file")
        if out_file is not None:
            raise BadInputError("--out goes with 'qsight sweep report'")
        failed = _run(Path(target), storage, set_ or [], workers)
    if failed:
        raise typer.Exit(1)


sweep.__doc__ = SWEEP_HELP


def _run(path: Path, storage: str | None, overrides: list[str], workers: int) -> int:
    from qsight.config.sweep import load_sweep
    from qsight.sweeps import build_summary, open_storage, open_study, run_workers, storage_url, write_summary
    from qsight.sweeps.tracking import ensure_parents, finish_parents

    sweep = load_sweep(path, overrides)
    url = storage_url(sweep, storage)
    study = open_study(sweep, open_storage(url))
    ensure_parents(sweep, study)
    _remember(sweep, url)
    stop = threading.Event()
    monitor = threading.Thread(target=_display, args=(sweep, url, stop), daemon=True)
    monitor.start()
    try:
        codes = run_workers(sweep, url, workers, study)
    finally:
        stop.set()
        monitor.join(timeout=10)
    broken = [code for code in codes if code]
    if broken:
        err.print(f"sweep {sweep.name}: {len(broken)} of {workers} worker processes failed "
                  f"(exit codes {broken}); see the messages above", highlight=False)
    summary = build_summary(sweep, study, url)
    written = write_summary(sweep, summary)
    if summary["counts"]["running"] == 0 and summary["counts"]["waiting"] == 0:
        finish_parents(sweep, study, summary)
    _print_summary(summary)
    out.print(f"sweep summary: {written}", highlight=False)
    return int(summary["counts"]["failed"]) + len(broken)


def _remember(sweep: Sweep, url: str) -> None:
    """``sweep.json`` in the sweep's folder: how `status NAME` finds the file and storage."""
    sweep.folder.mkdir(parents=True, exist_ok=True)
    data = {"sweep_file": str(sweep.path.resolve()), "storage": url, "set": list(sweep.given)}
    (sweep.folder / "sweep.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _display(sweep: Sweep, url: str, stop: threading.Event) -> None:
    """One live line for the sweep: done / running / pruned / failed, best so far."""
    from rich.live import Live

    from qsight.sweeps import open_storage

    try:
        import optuna

        study = optuna.load_study(study_name=sweep.name, storage=open_storage(url))
        with Live(console=err, refresh_per_second=1, transient=False) as live:
            while True:
                live.update(_progress_line(sweep, study))
                if stop.wait(2.0):
                    live.update(_progress_line(sweep, study))
                    break
        if not err.is_terminal:
            err.print()
    except Exception as exc:  # the display must never stop the sweep
        import logging

        logging.getLogger("qsight.sweeps").warning("sweep progress display stopped: %s", exc)


def _progress_line(sweep: Sweep, study: Any) -> str:
    from qsight.sweeps.aggregate import counts, planned

    c = counts(study.get_trials(deepcopy=False), planned(sweep))
    line = (f"sweep {sweep.name}: {c['done']}/{c['total']} done, {c['running']} running, "
            f"{c['pruned']} pruned, {c['failed']} failed")
    with contextlib.suppress(ValueError):
        line += f", best {study.best_value:.4g} (trial {study.best_trial.number})"
    return line


def _status(ref: str, storage: str | None, overrides: list[str], root: Path) -> None:
    sweep, study, summary, written = _refresh(ref, storage, overrides, root)
    out.print(_progress_line(sweep, study), highlight=False)
    _print_summary(summary)
    out.print(f"sweep summary: {written}", highlight=False)


def _report(ref: str, storage: str | None, overrides: list[str], root: Path, target: Path | None) -> None:
    from qsight.sweeps.report import write_report

    sweep, _, summary, _ = _refresh(ref, storage, overrides, root)
    page = write_report(summary, target or sweep.folder / "report.html")
    out.print(f"sweep report: {page}", highlight=False)


def _refresh(ref: str, storage: str | None, overrides: list[str],
             root: Path) -> tuple[Sweep, Any, dict[str, Any], Path]:
    """The sweep (by file or name), its study and a fresh summary, written to summary.json."""
    from qsight.config.sweep import load_sweep
    from qsight.errors import BadInputError
    from qsight.sweeps import build_summary, open_storage, storage_url, write_summary

    path = Path(ref)
    if not path.is_file():
        saved = root / "sweeps" / ref / "sweep.json"
        if not saved.is_file():
            raise BadInputError(f"{ref}: neither a sweep file nor a sweep under {root / 'sweeps'}")
        info = json.loads(saved.read_text(encoding="utf-8"))
        path, storage, overrides = Path(info["sweep_file"]), storage or info["storage"], overrides or info["set"]
    sweep = load_sweep(path, overrides, check=False)
    url = storage_url(sweep, storage)
    import optuna

    try:
        study = optuna.load_study(study_name=sweep.name, storage=open_storage(url))
    except KeyError:
        raise BadInputError(f"sweep {sweep.name!r}: not started in {url}") from None
    summary = build_summary(sweep, study, url)
    return sweep, study, summary, write_summary(sweep, summary)


def _print_summary(summary: dict[str, Any]) -> None:
    """Per configuration: seeds, then mean ± half the 95 % interval of the objective's metric, per head."""
    metric = str(summary["objective"]).rsplit("/", 1)[-1]
    heads = sorted({k for g in summary["groups"] for k in g["metrics"] if k.startswith("val/")
                    and k.endswith("/" + metric)})
    table = Table(title=f"sweep {summary['name']}", title_justify="left")
    table.add_column("configuration")
    table.add_column("n", justify="right")
    for key in heads:
        table.add_column(key.split("/")[1] + " " + metric, justify="right")
    for group in summary["groups"]:
        cells = [", ".join(f"{_short(k)}={v}" for k, v in group["params"].items()) or "-", str(group["n"])]
        cells += [_cell(group["metrics"].get(k)) for k in heads]
        table.add_row(*cells)
    out.print(table)


def _short(key: str) -> str:
    """The last two parts of a dotted key: ``quantum.qubits``, ``0.lr``."""
    return ".".join(key.split(".")[-2:])


def _cell(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "-"
    if stat["ci"] is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ± {(stat['ci'][1] - stat['ci'][0]) / 2:.3f}"
