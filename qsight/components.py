"""The component registries of qsight, one per kind, and their loading.

Importing this module is cheap: built-in components register from light
modules (pydantic params and lazy factories), so listing or validating never
imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from registry import Registry, load_plugins

if TYPE_CHECKING:
    from torch import nn

    from qsight.data.base import DataBundle, DataContext  # noqa: F401
    from qsight.quantum.base import QuantumSampler
    from qsight.sinks.base import Sink

ENTRY_POINT_GROUP = "qsight.components"

BACKBONES: Registry[nn.Module] = Registry("backbone")
HEADS: Registry[nn.Module] = Registry("head")
SAMPLERS: Registry[QuantumSampler] = Registry("sampler")
DATASETS: Registry[DataBundle] = Registry("dataset")
SINKS: Registry[Sink] = Registry("sink")

KINDS: dict[str, Registry[Any]] = {
    r.kind: r for r in (BACKBONES, HEADS, SAMPLERS, DATASETS, SINKS)
}

_BUILTIN_PACKAGES = ("qsight.data", "qsight.models", "qsight.quantum", "qsight.sinks")
_loaded = False


def load_components() -> None:
    """Register the built-in components, then every plugin's (once)."""
    global _loaded
    if not _loaded:
        for pkg in _BUILTIN_PACKAGES:
            importlib.import_module(pkg)
        _loaded = True
    load_plugins(ENTRY_POINT_GROUP)


def registered_count() -> int:
    """How many components are registered in all kinds (changes when plugins add some)."""
    return sum(len(r) for r in KINDS.values())
