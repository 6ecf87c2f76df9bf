"""Metric names: the one owner of ``<split>/<head>/<metric>`` keys (build, parse, group by head).

Heads are named by the user; the only reserved head name is the ensemble's. Cheap to import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple, TypeVar

V = TypeVar("V")

ENSEMBLE = "ensemble"
SPLITS = ("train", "val", "test")
TOTAL = "total"  # the head name under which the summed training loss is logged
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
METRIC_PATTERN = r"^(train|val|test)/[A-Za-z0-9_.-]+/[A-Za-z0-9_]+$"
DEFAULT_MONITOR = "val/ensemble/qwk"
DEFAULT_MONITOR_MODE: Final = "max"


class MetricName(NamedTuple):
    """The three parts of a metric key."""

    split: str
    head: str
    metric: str

    def __str__(self) -> str:
        return metric_key(self.split, self.head, self.metric)


def metric_key(split: str, head: str, metric: str) -> str:
    """``metric_key("val", "quantum", "qwk")`` → ``"val/quantum/qwk"``."""
    return f"{split}/{head}/{metric}"


def parse_metric(key: str) -> MetricName | None:
    """``"val/quantum/qwk"`` → ``MetricName("val", "quantum", "qwk")``; None for other shapes."""
    parts = key.split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return MetricName(*parts)


def is_metric_key(key: str) -> bool:
    """Whether `key` is a well-formed ``<split>/<head>/<metric>`` name."""
    return re.match(METRIC_PATTERN, key) is not None


def prefixed(split: str, per_head: Mapping[str, V]) -> dict[str, V]:
    """``{"quantum/qwk": v}`` → ``{"val/quantum/qwk": v}``."""
    return {f"{split}/{name}": value for name, value in per_head.items()}


def loss_head(name: str) -> str:
    """A model loss entry's head name: the model's ``loss`` (the sum) is logged as ``total``."""
    return TOTAL if name == "loss" else name


def order_heads(heads: Iterable[str]) -> list[str]:
    """Heads in the order given (first appearance), the ensemble last."""
    unique = list(dict.fromkeys(heads))
    return [h for h in unique if h != ENSEMBLE] + ([ENSEMBLE] if ENSEMBLE in unique else [])


def by_head(metrics: Mapping[str, V], split: str = "val") -> dict[str, dict[str, V]]:
    """``{"val/quantum/qwk": v}`` → ``{"quantum": {"qwk": v}}`` for one split; the ensemble last."""
    grouped: dict[str, dict[str, V]] = {}
    for key, value in metrics.items():
        name = parse_metric(key)
        if name is not None and name.split == split:
            grouped.setdefault(name.head, {})[name.metric] = value
    return {h: grouped[h] for h in order_heads(grouped)}


def monitor_head(monitor: str) -> str:
    """The head a monitor key watches (``val/ensemble/qwk`` → ``ensemble``)."""
    name = parse_metric(monitor)
    if name is None:
        raise ValueError(f"not a <split>/<head>/<metric> name: {monitor!r}")
    return name.head
