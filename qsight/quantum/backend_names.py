"""Names of qiskit-ibm-runtime's fake backends, read without importing it (validation stays cheap).

Importing ``qiskit_ibm_runtime.fake_provider`` costs seconds (it imports the whole runtime client), so
spec validation reads the class names from the installed package's ``fake_provider/backends``
source instead; the name a spec uses is the class name in snake case (``FakeTorino`` →
``fake_torino``, ``FakeManilaV2`` → ``fake_manila_v2``, also ``fake_manila``).
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from functools import cache
from pathlib import Path

REFERENCE_BACKEND = "fake_torino"
_IMPORT = re.compile(r"^from \.\w+ import (Fake\w+)", re.MULTILINE)
_REAL = re.compile(r"^[a-z][a-z0-9_]*$")


def snake_case(class_name: str) -> str:
    """``FakeManilaV2`` → ``fake_manila_v2``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()


@cache
def fake_backend_classes() -> dict[str, str]:
    """Spec name → class name of every fake backend of the installed qiskit-ibm-runtime ({} if absent)."""
    spec = importlib.util.find_spec("qiskit_ibm_runtime")
    if spec is None or spec.origin is None:
        return {}
    source = Path(spec.origin).parent / "fake_provider" / "backends" / "__init__.py"
    classes = _IMPORT.findall(source.read_text()) if source.is_file() else []
    if not classes:  # an unexpected layout: ask the package itself (slow, but right)
        from qiskit_ibm_runtime import fake_provider

        classes = [n for n in dir(fake_provider) if n.startswith("Fake") and n[4:5].isupper()]
    names: dict[str, str] = {}
    for cls in classes:
        names[snake_case(cls)] = cls
    for cls in classes:  # 'fake_manila' for FakeManilaV2, unless a class takes that name itself
        names.setdefault(snake_case(cls).removesuffix("_v2"), cls)
    return names


def is_fake(name: str) -> bool:
    """Whether `name` asks for a fake backend (any ``fake_…`` name)."""
    return name.startswith("fake_")


def check_fake_backend(name: str) -> str:
    """`name` if it is a fake backend of the installed qiskit-ibm-runtime; ValueError naming close matches."""
    known = fake_backend_classes()
    if not known:
        raise ValueError(f"backend {name!r} needs qiskit-ibm-runtime (pip install qiskit-ibm-runtime)")
    if name in known:
        return name
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    examples = ", ".join(sorted(n for n in known if not n.endswith("_v2"))[:6])
    count = len(set(known.values()))
    raise ValueError(f"unknown fake backend {name!r}{hint} ({count} fake backends, e.g. {examples}, …)")


def check_device_name(name: str) -> str:
    """A fake backend (checked) or the name of a real IBM Quantum device (format only)."""
    if is_fake(name):
        return check_fake_backend(name)
    if not _REAL.match(name):
        raise ValueError(f"backend {name!r} is not a device name (e.g. 'ibm_torino', or 'fake_torino' locally)")
    return name
