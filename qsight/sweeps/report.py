"""``qsight sweep report``: one self-contained HTML page per sweep, drawn from its summary.

The charts are inline SVG and the style inline, under the run report's Content-Security-Policy (no network
load of any kind), so the single file works when moved or mailed. Every text from the summary is escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from qsight.metric_names import order_heads, parse_metric
from qsight.runs.layout import write_atomic
from qsight.runs.report import CSP, CSS

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
EXTRA_CSS = """
svg.chart { background: #fff; border: 1px solid #ddd; margin: 0.5em 0; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #333; } .legend span { margin-right: 1.2em; }
.legend i { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%; margin-right: 0.3em; }
td.msg { max-width: 30em; font-size: 0.85em; } td.path { font-size: 0.8em; color: #555; }
"""
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 300, 56, 16, 14, 44


def write_report(summary: Mapping[str, Any], out: Path) -> Path:
    """Write the sweep's page to `out`; its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, render_report(summary))
    return out


def render_report(summary: Mapping[str, Any], metric: str | None = None) -> str:
    """The page's HTML text; `metric` (default: the objective's, e.g. ``qwk``) is drawn for every head."""
    name = metric or str(summary.get("objective", "val/ensemble/qwk")).rsplit("/", 1)[-1]
    groups = [g for g in summary.get("groups", []) if isinstance(g, dict)]
    heads = _heads(groups, name)
    sections = [_header(summary), _configurations(groups, heads, name), _versus(groups, heads, name),
                _spread(groups, heads, name), _importances(summary), _trials(summary)]
    title = escape(f"sweep {summary.get('name', '?')}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{title}</title>\n<style>{CSS}{EXTRA_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(s for s in sections if s) + "\n</body>\n</html>\n")


# ---- data ------------------------------------------------------------------------------------------------------


def _heads(groups: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    """Heads with a ``val/<head>/<metric>`` in any group, the ensemble last."""
    found = {n.head for g in groups for k in g.get("metrics", {}) if (n := parse_metric(k)) is not None
             and n.split == "val" and n.metric == metric}
    return order_heads(sorted(found))


def _stat(group: Mapping[str, Any], head: str, metric: str) -> dict[str, Any] | None:
    stat = group.get("metrics", {}).get(f"val/{head}/{metric}")
    return stat if isinstance(stat, dict) else None


def _label(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{_short(k)}={_value(v)}" for k, v in params.items()) or "base spec"


def _short(key: str) -> str:
    return ".".join(key.split(".")[-2:])


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def _mean_ci(stat: Mapping[str, Any] | None) -> str:
    if not stat:
        return "–"
    ci = stat.get("ci")
    return _num(stat["mean"]) + (f" ± {(ci[1] - ci[0]) / 2:.4f}" if ci else "")


# ---- HTML pieces -------------------------------------------------------------------------------------------------


def _missing(text: str) -> str:
    return f'<p class="missing">{escape(text)}</p>'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] = ()) -> str:
    """A table of plain text cells (escaped here); the first cell of a row is its header."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<th>{escape(c)}</th>" if i == 0 else f'<td class="{_cls(classes, i)}">{escape(c)}</td>'
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cls(classes: Sequence[str], i: int) -> str:
    return classes[i] if i < len(classes) and classes[i] else "num"


def _header(summary: Mapping[str, Any]) -> str:
    counts = summary.get("counts") or {}
    done = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("done", "running", "waiting", "pruned", "failed"))
    best = summary.get("best") or {}
    pairs = [("objective", f"{summary.get('objective')} ({summary.get('direction')})"),
             ("sampler", str(summary.get("sampler"))), ("trials", f"{done} of {counts.get('total', '?')}"),
             ("best", f"{_num(best.get('value'))} (trial {best.get('number')}, {_label(best.get('params') or {})}, "
                      f"seed {best.get('seed')})" if best else "none yet"),
             ("sweep file", str(summary.get("sweep_file"))), ("storage", str(summary.get("storage")))]
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs)
    return f"<h1>sweep {escape(str(summary.get('name')))}</h1>\n<dl class=\"facts\">{facts}</dl>"


def _configurations(groups: Sequence[Mapping[str, Any]], heads: Sequence[str], metric: str) -> str:
    title = f"<h2>Configurations</h2>\n<p>Validation {escape(metric)} per head: mean ± half the 95 % interval.</p>"
    if not groups:
        return title + _missing("No completed trials yet.")
    rows = [[_label(g.get("params") or {}), str(g.get("n")), ", ".join(str(s) for s in g.get("seeds", [])),
             *(_mean_ci(_stat(g, h, metric)) for h in heads)] for g in groups]
    return title + _table(["configuration", "n", "seeds", *heads], rows, ["", "", "text"])


def _legend(heads: Sequence[str]) -> str:
    items = "".join(f'<span><i style="background:{COLOURS[i % len(COLOURS)]}"></i>{escape(h)}</span>'
                    for i, h in enumerate(heads))
    return f'<p class="legend">{items}</p>'


def _versus(groups: Sequence[Mapping[str, Any]], heads: Sequence[str], metric: str) -> str:
    """One chart per parameter: each head's per-seed values (small dots), mean and 95 % interval."""
    keys = list(dict.fromkeys(k for g in groups for k in g.get("params", {})))
    if not keys or not heads:
        return ""
    charts = [f"<h3>{escape(metric)} vs {escape(k)}</h3>\n" + _versus_chart(groups, heads, metric, k) for k in keys]
    return (f"<h2>{escape(metric)} vs parameter</h2>\n<p>Small dots: one run each; large dots: the mean over seeds; "
            "bars: the 95 % interval.</p>\n" + _legend(heads) + "\n".join(charts))


def _spread(groups: Sequence[Mapping[str, Any]], heads: Sequence[str], metric: str) -> str:
    """Per head: each configuration's runs by seed, as a strip chart and a table."""
    if not groups or not heads:
        return ""
    parts = [f"<h2>Per-seed spread per head</h2>\n<p>Validation {escape(metric)} of every run; the bar is the "
             "95 % interval of the mean, the tick the mean.</p>"]
    seeds = sorted({v["seed"] for g in groups for h in heads for v in (_stat(g, h, metric) or {}).get("values", [])},
                   key=str)
    for head in heads:
        rows = []
        for g in groups:
            stat = _stat(g, head, metric) or {}
            by_seed = {v["seed"]: v["value"] for v in stat.get("values", [])}
            rows.append([_label(g.get("params") or {}), *(_num(by_seed.get(s)) for s in seeds),
                         _num(stat.get("std")), _mean_ci(stat)])
        parts.append(f"<h3>{escape(head)}</h3>\n" + _strip_chart(groups, head, metric) +
                     _table(["configuration", *(f"seed {s}" for s in seeds), "std", "mean ± 95 %"], rows))
    return "\n".join(parts)


def _importances(summary: Mapping[str, Any]) -> str:
    found = summary.get("importances") or {}
    if not found:
        return ""
    rows = [[str(k), f"{float(v):.3f}"] for k, v in sorted(found.items(), key=lambda kv: -float(kv[1]))]
    return "<h2>Parameter importances</h2>\n<p>Optuna's estimate (fANOVA).</p>\n" + _table(["parameter", "importance"],
                                                                                             rows)


def _trials(summary: Mapping[str, Any]) -> str:
    trials = summary.get("trials") or []
    if not trials:
        return "<h2>Trials</h2>\n" + _missing("No trials in the study.")
    rows = [[str(t.get("number")), str(t.get("state")), _label(t.get("params") or {}), str(t.get("seed")),
             _num(t.get("value")), str(t.get("message") or ""), str(t.get("run_dir") or "")] for t in trials]
    return "<h2>Trials</h2>\n" + _table(["trial", "state", "configuration", "seed", "value", "message", "run folder"],
                                        rows, ["", "text", "text", "", "", "msg", "path"])


# ---- SVG charts --------------------------------------------------------------------------------------------------


class Scale:
    """A linear (or log) map from data to pixels."""

    def __init__(self, low: float, high: float, start: float, end: float, log: bool = False) -> None:
        self.log = log
        low, high = (math.log10(low), math.log10(high)) if log else (low, high)
        if high - low < 1e-12:
            low, high = low - 0.5, high + 0.5
        self.low, self.high, self.start, self.end = low, high, start, end

    def __call__(self, value: float) -> float:
        value = math.log10(value) if self.log else value
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        steps = [self.low + i * (self.high - self.low) / (count - 1) for i in range(count)]
        return [10 ** s for s in steps] if self.log else steps


def _padded(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or 0.05
    return low - pad, high + pad


def _svg(width: int, height: int, label: str, body: Sequence[str]) -> str:
    return (f'<svg class="chart" role="img" aria-label="{escape(label)}" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{escape(label)}</title>'
            + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "middle") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, colour: str = "#999", width: float = 1) -> str:
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
            f'stroke-width="{width}"/>')


def _dot(x: float, y: float, r: float, colour: str, title: str, opacity: float = 1.0) -> str:
    return (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{colour}" fill-opacity="{opacity}">'
            f"<title>{escape(title)}</title></circle>")


def _value_axis(scale: Scale, x0: float, x1: float) -> list[str]:
    """Horizontal grid lines with labels on the left (a vertical value axis)."""
    out = []
    for tick in scale.ticks():
        y = scale(tick)
        out += [_line(x0, y, x1, y, "#eee"), _text(x0 - 4, y + 4, f"{tick:.3g}", "end")]
    return out


def _positions(values: Sequence[Any], start: float, end: float) -> tuple[dict[str, float], Scale | None]:
    """Pixel positions of a parameter's values: evenly spaced categories, or a numeric (log) axis."""
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    distinct = sorted(set(values), key=lambda v: (v if numeric else str(v)))
    if numeric and len(distinct) > 8:
        low, high = min(distinct), max(distinct)
        scale = Scale(low, high, start, end, log=low > 0 and high / low >= 10)
        return {_value(v): scale(v) for v in distinct}, scale
    step = (end - start) / max(1, len(distinct))
    return {_value(v): start + step * (i + 0.5) for i, v in enumerate(distinct)}, None


def _versus_chart(groups: Sequence[Mapping[str, Any]], heads: Sequence[str], metric: str, key: str) -> str:
    plot = [g for g in groups if key in g.get("params", {})]
    stats = [(g, h, s) for g in plot for h in heads if (s := _stat(g, h, metric))]
    if not stats:
        return _missing(f"No {metric} values for {key}.")
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
    xs, numeric = _positions([g["params"][key] for g in plot], x0 + 10, x1 - 10)
    ys = Scale(*_padded(_extent(s for _, _, s in stats)), y1, y0)
    body = [*_value_axis(ys, x0, x1), _line(x0, y1, x1, y1), _line(x0, y0, x0, y1),
            _text((x0 + x1) / 2, HEIGHT - 6, key)]
    if numeric:
        body += [_text(numeric(t), y1 + 16, f"{t:.3g}") for t in numeric.ticks()]
    else:
        body += [_text(x, y1 + 16, label) for label, x in xs.items()]
    shift = 0.0 if numeric else min(12.0, (x1 - x0) / max(1, len(xs)) / (len(heads) + 1))
    for g, head, stat in stats:
        i = heads.index(head)
        x = xs[_value(g["params"][key])] + (i - (len(heads) - 1) / 2) * shift
        body += _marks(x, ys, stat, COLOURS[i % len(COLOURS)], f"{head}, {_label(g['params'])}", vertical=True)
    return _svg(WIDTH, HEIGHT, f"{metric} vs {key}", body)


def _extent(stats: Iterable[Mapping[str, Any]]) -> list[float]:
    found: list[float] = []
    for stat in stats:
        found += [float(v["value"]) for v in stat.get("values", [])] + [float(stat["mean"])]
        found += [float(c) for c in stat.get("ci") or []]
    return found


def _marks(at: float, scale: Scale, stat: Mapping[str, Any], colour: str, what: str, vertical: bool) -> list[str]:
    """Per-seed dots, the interval bar and the mean of one stat, at `at` across the value axis."""
    def point(across: float, value: float) -> tuple[float, float]:
        return (across, scale(value)) if vertical else (scale(value), across)

    out = []
    ci = stat.get("ci")
    if ci:
        (xa, ya), (xb, yb) = point(at, ci[0]), point(at, ci[1])
        out.append(_line(xa, ya, xb, yb, colour, 2))
    for v in stat.get("values", []):
        out.append(_dot(*point(at, v["value"]), 2.5, colour, f"{what}, seed {v['seed']}: {v['value']:.4f}", 0.45))
    mean_x, mean_y = point(at, stat["mean"])
    out.append(_dot(mean_x, mean_y, 4.5, colour, f"{what}: mean {_mean_ci(stat)} (n={stat.get('n')})"))
    return out


def _strip_chart(groups: Sequence[Mapping[str, Any]], head: str, metric: str) -> str:
    rows = [(g, s) for g in groups if (s := _stat(g, head, metric))]
    if not rows:
        return _missing(f"No {metric} values for {head}.")
    left, row_h = 220, 26
    height = TOP + row_h * len(rows) + BOTTOM
    xs = Scale(*_padded(_extent(s for _, s in rows)), left, WIDTH - RIGHT)
    body = [_line(left, TOP, left, height - BOTTOM), _text((left + WIDTH) / 2, height - 6, f"val/{head}/{metric}")]
    for tick in xs.ticks():
        body += [_line(xs(tick), TOP, xs(tick), height - BOTTOM, "#eee"),
                 _text(xs(tick), height - BOTTOM + 16, f"{tick:.3g}")]
    colour = COLOURS[0]
    for i, (g, stat) in enumerate(rows):
        y = TOP + row_h * (i + 0.5)
        body.append(_text(left - 6, y + 4, _label(g.get("params") or {})[:40], "end"))
        body += _marks(y, xs, stat, colour, f"{head}, {_label(g.get('params') or {})}", vertical=False)
    return _svg(WIDTH, height, f"per-seed spread of val/{head}/{metric}", body)
