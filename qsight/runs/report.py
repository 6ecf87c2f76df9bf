"""``qsight report RUN``: one self-contained static HTML page per run.

Images are embedded as base64 data URIs and the style is inline, so the single file works when moved or
mailed; a Content-Security-Policy forbids every network load. Everything read from the run folder is
HTML-escaped. A partial run (no summary, metrics or visualizations) still gives a page that says what is missing.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from qsight.metric_names import by_head, metric_key
from qsight.runs import layout
from qsight.runs.catalog import KEY_METRICS, format_seconds, test_estimates
from qsight.runs.curves import learning_curves
from qsight.runs.folder import RunFolder
from qsight.runs.layout import write_atomic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; } dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; } pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; } img { max-width: 100%; }
div.pair figure { width: 47%; }
figcaption { font-size: 0.85em; color: #555; text-align: center; }
.missing { color: #a15c00; font-style: italic; }
.status-completed { color: #1a7f37; } .status-failed, .status-interrupted { color: #b42318; }
"""


def write_report(run: RunFolder, out: Path | None = None) -> Path:
    """Write ``<run folder>/report.html`` (or `out`) and return its path."""
    target = out if out is not None else run.path / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, render_report(run))
    return target


def render_report(run: RunFolder) -> str:
    """The page's HTML text."""
    sections = (_header(run), _final_metrics(run), _test_split(run), _circuit_costs(run), _best_epochs(run),
                _curves(run), _confusions(run), _gradcam(run), _spec(run), _environment(run))
    title = escape(f"{run.experiment} · {run.run_id}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")


# ---- small HTML pieces ---------------------------------------------------------------------------------------------


def _missing(text: str) -> str:
    return f'<p class="missing">{escape(text)}</p>'


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    """A definition list; keys and values are escaped here."""
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs)
    return f'<dl class="facts">{items}</dl>'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of plain text cells (escaped here); cells that parse as numbers are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c, first=i == 0) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(text: str, first: bool) -> str:
    if first:
        return f"<th>{escape(text)}</th>"
    try:
        float(text)
    except ValueError:
        return f"<td>{escape(text)}</td>"
    return f'<td class="num">{escape(text)}</td>'


def _image(data: bytes, alt: str, caption: str) -> str:
    """A PNG as a data URI inside a captioned figure."""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{uri}" alt="{escape(alt)}"><figcaption>{escape(caption)}</figcaption></figure>'


def _png_file(path: Path, alt: str, caption: str) -> str:
    """A PNG file embedded, or a note when it is unreadable or not a PNG."""
    try:
        data = path.read_bytes()
    except OSError:
        return _missing(f"{path.name}: cannot be read")
    if not data.startswith(PNG_SIGNATURE):
        return _missing(f"{path.name}: not a PNG file")
    return _image(data, alt, caption)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "–"


# ---- sections ------------------------------------------------------------------------------------------------------


def _header(run: RunFolder) -> str:
    status = run.status
    summary = run.summary or {}
    pairs = [("experiment", run.experiment), ("run id", run.run_id), ("status", status),
             ("started", _iso(run.started)),
             ("duration", _duration(run.seconds)), ("classes", ", ".join(_class_names(run)) or "unknown"),
             ("folder", str(run.path))]
    description = run.spec.get("description")
    if description:
        pairs.insert(1, ("description", str(description)))
    if summary.get("message"):
        pairs.append(("message", str(summary["message"])))
    absent = _absent_files(run)
    note = _missing("Missing from the run folder: " + ", ".join(absent) + ".") if absent else ""
    return (f'<h1>{escape(run.experiment)} <small class="status-{escape(status)}">{escape(status)}</small></h1>\n'
            + _facts(pairs) + note)


def _duration(seconds: float | None) -> str:
    return "unknown (no summary.json)" if seconds is None else format_seconds(seconds)


def _class_names(run: RunFolder) -> list[str]:
    """From summary.json, else from the header of any confusion CSV."""
    names = (run.summary or {}).get("class_names")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    for _, _, folder in reversed(run.epoch_dirs()):
        for path in sorted(folder.glob("confusion_*.csv")):
            try:
                with path.open(newline="", encoding="utf-8") as handle:
                    return next(csv.reader(handle))[1:]
            except (OSError, StopIteration, csv.Error, UnicodeDecodeError):
                continue
    return []


def _absent_files(run: RunFolder) -> list[str]:
    wanted = (layout.SPEC, layout.SUMMARY, layout.METRICS, layout.ENVIRONMENT, layout.VISUALIZATIONS)
    return [name for name in wanted if not (run.path / name).exists()]


def _final_metrics(run: RunFolder) -> str:
    final = run.final
    heads = list(by_head(final))
    if not heads:
        return "<h2>Final metrics</h2>\n" + _missing("No validation metrics were logged.")
    columns = [m for m in KEY_METRICS if any(metric_key("val", h, m) in final for h in heads)]
    rows = [[head, *(_number(final.get(metric_key("val", head, m))) for m in columns)] for head in heads]
    source = "summary.json" if run.summary and run.summary.get("final") else "the last logged epoch (no summary.json)"
    return (f"<h2>Final metrics</h2>\n<p>Validation, from {escape(source)}.</p>\n"
            + _table(["head", *columns], rows))


def _test_split(run: RunFolder) -> str:
    """Test metrics with their 95 % intervals, paired QWK differences, parameter counts, test confusions."""
    estimates = test_estimates(run)
    if not estimates:
        return "<h2>Test split</h2>\n" + _missing("No test split was evaluated (the dataset has none).")
    columns = [m for m in KEY_METRICS if any(m in e for e in estimates.values())]
    counts = run.parameters
    header = ["head", *columns] + (["parameters"] if counts else [])
    rows = [[head, *(e[m].text(4) if m in e else "–" for m in columns)]
            + ([str(counts[head]) if head in counts else "–"] if counts else []) for head, e in estimates.items()]
    parts = ["<h2>Test split</h2>",
             "<p>Evaluated once, on the model the run ended with; [low, high]: 95 % bootstrap interval over the "
             "test samples.</p>", _table(header, rows)]
    paired = [[name, _number(d.get("qwk_diff")), _ci_text(d.get("ci"))] for name, d in run.test_paired.items()]
    if paired:
        parts += ["<p>Paired QWK differences (same resamples for both heads): an interval that excludes 0 "
                  "is a difference beyond sampling noise.</p>",
                  _table(["pair", "QWK difference", "95 % interval"], paired)]
    figures = [_png_file(p, f"test confusion matrix of {p.stem}", p.stem.removeprefix("confusion_") + " (test)")
               for p in sorted(run.layout.test_dir.glob("confusion_*.png"))]
    if figures:
        parts.append('<div class="pair">' + "".join(figures) + "</div>")
    return "\n".join(parts)


COST_ROWS = (
    ("qubits", "qubits"), ("parameters", "circuit parameters"), ("depth", "depth"),
    ("two_qubit_gates", "two-qubit gates"), ("backend", "backend"), ("transpiled_depth", "transpiled depth"),
    ("transpiled_two_qubit_gates", "transpiled two-qubit gates"), ("estimated_fidelity", "estimated fidelity"),
    ("shots", "shots"), ("circuits_per_epoch", "circuits per training epoch on hardware"),
)


def _circuit_costs(run: RunFolder) -> str:
    """Per quantum head: its circuit's size, and what it would cost on the chosen (or reference) device."""
    costs = run.quantum_costs
    if not costs:
        return ""
    heads = list(costs)
    rows = [[label, *(_cost_cell(costs[h], key) for h in heads)] for key, label in COST_ROWS]
    errors = [f"{h}: {c['error']}" for h, c in costs.items() if "error" in c]
    reference = [h for h, c in costs.items() if c.get("reference_backend")]
    note = (f"<p>{escape(', '.join(reference))}: no device chosen; transpiled for the reference device "
            f"{escape(str(costs[reference[0]].get('backend')))}. Fidelity is estimated from the device's gate "
            "and readout errors.</p>") if reference else ""
    return ("<h2>Quantum circuit cost</h2>\n" + note + _table(["", *heads], rows)
            + "".join(_missing(e) for e in errors))


def _cost_cell(cost: dict[str, Any], key: str) -> str:
    value = cost.get(key)
    if value is None:
        return "exact" if key == "shots" and "error" not in cost else "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _ci_text(ci: Any) -> str:
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, int | float) for x in ci):
        return f"[{ci[0]:.4f}, {ci[1]:.4f}]"
    return "–"


def _best_epochs(run: RunFolder) -> str:
    stages = run.stage_epochs()
    rows = [[s.name, str(len(s.epochs)), str(s.best) if s.best is not None else "–", s.monitor,
             _number(s.best_value)] for s in stages]
    parts = ["<h2>Best epochs</h2>"]
    best = (run.summary or {}).get("best")
    if isinstance(best, dict) and "stage" in best:
        epoch = best.get("epoch")
        shown = str(epoch) if isinstance(epoch, int) else "?"
        parts.append(f"<p>best.pt holds stage <b>{escape(str(best['stage']))}</b>, epoch {escape(shown)}.</p>")
    parts.append(_table(["stage", "epochs", "best epoch", "monitor", "value"], rows) if rows
                 else _missing("No stages found (spec.toml has none and there are no visualizations)."))
    return "\n".join(parts)


def _curves(run: RunFolder) -> str:
    png = learning_curves(run.metrics)
    body = (_image(png, "learning curves", "per head; dashed lines mark stage boundaries") if png
            else _missing("No epochs in metrics.jsonl: no learning curves."))
    return "<h2>Learning curves</h2>\n" + body


def _confusions(run: RunFolder) -> str:
    """Each head's latest confusion matrix (heads trained in an earlier stage keep their last one)."""
    latest: dict[str, tuple[str, Path]] = {}
    for stage, epoch, folder in run.epoch_dirs():
        for path in sorted(folder.glob("confusion_*.png")):
            latest[path.stem.removeprefix("confusion_")] = (f"{stage}, epoch {epoch}", path)
    if not latest:
        return "<h2>Confusion matrices</h2>\n" + _missing("No confusion matrices in visualizations/.")
    order = list(by_head(run.final))
    heads = sorted(latest, key=lambda h: (order.index(h) if h in order else len(order), h))
    figures = [_png_file(latest[h][1], f"confusion matrix of {h}", f"{h} ({latest[h][0]})") for h in heads]
    return '<h2>Confusion matrices</h2>\n<div class="pair">' + "".join(figures) + "</div>"


POINTING = ("pointing_game", "pointing_game_shuffled", "pointing_game_chance", "pointing_game_n", "gradcam_blank")


def _gradcam(run: RunFolder) -> str:
    body = _missing("No Grad-CAM collage in visualizations/.")
    for stage, epoch, folder in reversed(run.epoch_dirs()):
        collage = folder / "gradcam" / "collage.png"
        if collage.is_file():
            body = _png_file(collage, "Grad-CAM collage", f"{stage}, epoch {epoch}")
            break
    return "<h2>Grad-CAM</h2>\n" + _pointing(run) + body


def _pointing(run: RunFolder) -> str:
    """The final pointing game per head beside its shuffled control and chance level; empty without one."""
    scored = {h: m for h, m in by_head(run.final).items() if "pointing_game" in m}
    if not scored:
        return ""
    def cell(m: Mapping[str, Any], name: str) -> str:
        value = m.get(name)
        return str(int(value)) if name == "pointing_game_n" and isinstance(value, int | float) else _number(value)

    rows = [[head, *(cell(m, name) for name in POINTING)] for head, m in scored.items()]
    return ("<p>Pointing game of the final epoch: the share of lesion-bearing validation images whose map "
            "peaks on a lesion; the shuffled control scores the same peaks on the other images' lesions "
            "(near the game itself: the maps point where lesions usually are, not at this image's).</p>\n"
            + _table(["head", "pointing game", "shuffled control", "chance", "images", "blank"], rows))


def _spec(run: RunFolder) -> str:
    try:
        text = run.layout.spec.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "<h2>Spec</h2>\n" + _missing("No spec.toml.")
    return f"<h2>Spec</h2>\n<pre>{escape(text)}</pre>"


def _environment(run: RunFolder) -> str:
    env = run.environment
    if not env:
        return "<h2>Environment</h2>\n" + _missing("No environment.json.")
    packages = env.get("packages")
    parts = ["<h2>Environment</h2>", _facts(_env_facts(env))]
    if isinstance(packages, dict) and packages:
        parts.append(_table(["package", "version"], [[str(k), str(v)] for k, v in packages.items()]))
    full = json.dumps(env, indent=2, sort_keys=True, default=str)
    parts.append(f"<details><summary>environment.json</summary><pre>{escape(full)}</pre></details>")
    return "\n".join(parts)


def _env_facts(env: Mapping[str, Any]) -> list[tuple[str, str]]:
    git, devices, extra = (_dict(env.get(k)) for k in ("git", "devices", "extra"))
    commit = str(git.get("commit", "unknown")) + (" (dirty)" if git.get("dirty") else "")
    names = devices.get("names") or []
    gpus = ", ".join(str(n) for n in names) if isinstance(names, list) and names else "none"
    pairs = [("python", env.get("python")), ("platform", env.get("platform")), ("git commit", commit),
             ("device", extra.get("device")), ("world size", extra.get("world_size")),
             ("CUDA", f"{devices.get('cuda')} (CUDA {devices.get('cuda_version')})" if devices else None),
             ("GPUs", gpus if devices else None), ("CPU threads", devices.get("cpu_threads")),
             ("seed", env.get("seed"))]
    return [(k, str(v)) for k, v in pairs if v is not None]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _iso(stamp: datetime | None) -> str:
    return stamp.isoformat(timespec="seconds") if stamp else "unknown"
