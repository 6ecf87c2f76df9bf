"""``qsight predict``, ``qsight evaluate``, ``qsight export``: using a trained run."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from qsight.cli.output import err, exit_codes, out
from qsight.cli.runs import DEFAULT_ROOT, RootOpt, RunArg
from qsight.errors import BadInputError

if TYPE_CHECKING:
    from qsight.serving.evaluate import Evaluation
    from qsight.serving.predict import PredictedImage

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY.PATH=VALUE",
                 help="Override the run's spec, e.g. --set 'model.heads.quantum.sampler={type=\"aer\", shots=1024}'."),
]
CheckpointOpt = Annotated[
    str, typer.Option("--checkpoint", help="last: the model the run ended with (as in its summary); best: "
                      "the best epoch of the latest stage that improved; or a checkpoint file.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")]
SHOWN = ("accuracy", "balanced_accuracy", "macro_f1", "qwk", "referable_auc", "ece")


def _run_dir(run: str, root: Path) -> Path:
    from qsight.runs.folder import open_run

    return open_run(run, root).path


@contextmanager
def _option(flag: str) -> Iterator[None]:
    """Name the option whose value the library refuses."""
    try:
        yield
    except BadInputError as exc:
        raise BadInputError(f"{flag} {exc}") from None


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A rich bar on an interactive stderr (silent otherwise); yields `advance(n)`."""
    if not err.is_terminal:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.update(task, advance=n)


def predict(
    run: RunArg,
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or a labels CSV.",
                                                metavar="INPUT...")],
    out_file: Annotated[Path, typer.Option("--out", help="The predictions CSV.")] = Path("predictions.csv"),
    head: Annotated[str, typer.Option("--head", help="Output whose grade and p_ columns lead: a head or ensemble.")]
    = "ensemble",
    all_heads: Annotated[bool, typer.Option("--all-heads", help="Add <head>_grade, <head>_p_<class> columns.")]
    = False,
    gradcam: Annotated[Path | None, typer.Option("--gradcam", help="Write one Grad-CAM overlay per image here.")]
    = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Image-decoding processes.")] = 0,
    device: DeviceOpt = "auto",
    checkpoint: CheckpointOpt = "last",
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Grade new images with a trained run: one CSV row per image (path, grade, referable, p_<class>..., error).

    Images are preprocessed exactly as the run evaluated its validation images; an unreadable image
    gets its row with the error and never stops the batch.
    """
    with exit_codes():
        from qsight.serving.inputs import collect_inputs
        from qsight.serving.loader import load_trained
        from qsight.serving.predict import predict_images, write_gradcam, write_predictions

        if not out_file.parent.is_dir():
            raise BadInputError(f"--out {out_file}: folder {out_file.parent} does not exist")
        trained = load_trained(_run_dir(run, root), checkpoint=checkpoint, device=device)
        with _option("--head"):
            trained.check_target(head)
        paths = collect_inputs(inputs, trained.spec)
        with _progress(len(paths), "predict") as advance:
            results = predict_images(trained, paths, batch_size=batch_size, workers=workers, on_batch=advance)
        targets = trained.targets if all_heads else ()
        write_predictions(results, trained.class_names, out_file, head, targets)
        failed = [r for r in results if r.error]
        for r in failed[:5]:
            err.print(f"[yellow]unreadable[/] {r.path}: {r.error}", highlight=False, soft_wrap=True)
        _print_grades(results, trained.class_names, head)
        if gradcam is not None:
            written = write_gradcam(trained, results, gradcam, head)
            out.print(f"Grad-CAM overlays: {len(written)} in {gradcam}", highlight=False)
        out.print(f"predictions: {out_file} ({len(results)} images, {len(failed)} unreadable)", highlight=False)


def _print_grades(results: list[PredictedImage], class_names: tuple[str, ...], head: str) -> None:
    counts: dict[int, int] = {}
    for r in results:
        grade = r.grade(head)
        if grade is not None:
            counts[grade] = counts.get(grade, 0) + 1
    if counts:
        shown = ", ".join(f"{class_names[g]} {n}" for g, n in sorted(counts.items()))
        out.print(f"{head} grades: {shown}", highlight=False)


def evaluate(
    run: RunArg,
    split: Annotated[str | None, typer.Option("--split", help="The run's val (default) or test split.")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="A new labelled dataset: a folder of class sub-folders, or a labels CSV.")] = None,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = "last",
    device: DeviceOpt = "auto",
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Re-evaluate a trained run without retraining, e.g. its quantum head under shots or noise.

    Writes RUN/evaluations/<id>/ (metrics.json, evaluation.json with the overrides, confusion
    matrices, confidence table) and logs it to the run's MLflow run.
    """
    with exit_codes():
        from qsight.serving.evaluate import evaluate_run

        run_dir = _run_dir(run, root)
        if split is not None and data is not None:
            raise BadInputError("--split and --data: give one (a split of the run, or new data)")
        result = evaluate_run(run_dir, split=split, data=data, overrides=set_ or [], checkpoint=checkpoint,
                              device=device, batch_size=batch_size)
        if as_json:
            typer.echo(json.dumps({"id": result.id, "folder": str(result.folder), "metrics": result.metrics,
                                   "ci": result.ci, "paired": result.paired}, indent=2))
            return
        _print_evaluation(result)


def _print_evaluation(result: Evaluation) -> None:
    from qsight.metric_names import by_head

    table = Table(title=f"{result.split}: {result.info['samples']} images", title_justify="left")
    grouped = by_head(result.metrics, result.split)
    columns = [m for m in SHOWN if any(m in v for v in grouped.values())]
    table.add_column("head", style="bold cyan")
    for m in columns:
        table.add_column(m, justify="right")
    if result.ci:
        table.add_column("qwk 95 % CI", justify="right")
    for head_name, values in grouped.items():
        cells = [f"{values[m]:.3f}" if m in values else "-" for m in columns]
        if result.ci:
            low_high = result.ci.get(f"{result.split}/{head_name}/qwk")
            cells.append(f"[{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else "-")
        table.add_row(head_name, *cells)
    out.print(table)
    for pair, d in result.paired.items():
        ci = d.get("ci")
        shown = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "no interval"
        out.print(f"qwk difference {pair}: {d['qwk_diff']:+.3f} {shown}", highlight=False)
    if result.info.get("samplers"):
        out.print("samplers: " + ", ".join(f"{h}={s}" for h, s in result.info["samplers"].items()), highlight=False)
    logged = f" (MLflow run {result.info['mlflow_run']})" if result.info.get("mlflow_run") else ""
    out.print(f"evaluation: {result.folder}{logged}", highlight=False)


def export(
    run: RunArg,
    format_: Annotated[str, typer.Option("--format", help="onnx or torch-export.")] = "onnx",
    out_file: Annotated[Path | None, typer.Option("--out", help="Default RUN/exports/model.onnx (or .pt2).")] = None,
    head: Annotated[str, typer.Option("--head", help="Export one head's probabilities instead of the ensemble.")]
    = "ensemble",
    samples: Annotated[int, typer.Option("--samples", min=1, help="Validation images the check compares.")] = 64,
    checkpoint: CheckpointOpt = "last",
    as_json: Annotated[bool, typer.Option("--json", help='Print {"format", "file", "max_abs_diff", "samples"}.')]
    = False,
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Export the whole hybrid model (quantum heads included) and check it against torch.

    The check runs the file (ONNX Runtime, or the torch.export program) on the run's validation
    images and compares probabilities with torch: exit 1 when they differ by more than 1e-4.
    """
    with exit_codes():
        from qsight.serving.export import FORMATS, TOLERANCE, export_run

        if format_ not in FORMATS:
            raise BadInputError(f"--format {format_!r}: expected one of {', '.join(FORMATS)}")
        if out_file is not None and not out_file.parent.is_dir():
            raise BadInputError(f"--out {out_file}: folder {out_file.parent} does not exist")
        result = export_run(_run_dir(run, root), format_, out_file, output=head, checkpoint=checkpoint,
                            samples=samples)
        if as_json:
            typer.echo(json.dumps(result.as_json(), indent=2))
        else:
            for note in result.notes:
                err.print(f"[yellow]note[/] {note}", highlight=False, soft_wrap=True)
            out.print(f"{result.format}: {result.file}", highlight=False)
            out.print(f"check: max |Δp| = {result.max_abs_diff:.2e} over {result.samples} images "
                      f"(tolerance {TOLERANCE:g})", highlight=False)
        if not result.ok:
            err.print(f"[red]check failed[/]: the export differs from torch by {result.max_abs_diff:.2e}")
            raise typer.Exit(1)
