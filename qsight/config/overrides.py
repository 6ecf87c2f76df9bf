"""``--set KEY.PATH=VALUE`` overrides, applied to raw spec data before validation."""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from qsight.errors import BadInputError

_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_BARE = re.compile(r"^[A-Za-z_./~][A-Za-z0-9_.:/+~-]*$")


class OverrideError(BadInputError):
    """A malformed or inapplicable ``--set``."""

    def __init__(self, override: str, reason: str) -> None:
        super().__init__(f"--set {override!r}: {reason}")


def parse_value(text: str) -> Any:
    """A TOML literal (``2``, ``1e-4``, ``"aer"``, ``[1, 2]``, ``{a = 1}``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if _BARE.match(text) and text not in ("true", "false"):
            return text
        raise ValueError(f"value {text!r} is not a TOML literal (quote strings: '\"text\"')") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.0.c=VALUE`` into its key path and parsed value."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep:
        raise OverrideError(item, "expected KEY.PATH=VALUE")
    if not _KEY.match(key):
        raise OverrideError(item, f"bad key path {key!r} (dotted names and list indices, e.g. stages.0.lr)")
    if not value.strip():
        raise OverrideError(item, "missing value after '='")
    try:
        return key.split("."), parse_value(value.strip())
    except ValueError as exc:
        raise OverrideError(item, str(exc)) from None


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of `raw` with each override set; tables are created as needed."""
    data: dict[str, Any] = copy.deepcopy(dict(raw))
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            where = ".".join(path[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit():
                    raise OverrideError(item, f"{'.'.join(path[:depth])} is a list; use an index, not {part!r}")
                idx = int(part)
                if idx >= len(node):
                    raise OverrideError(item, f"{where}: index {idx} out of range (the list has {len(node)} items)")
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise OverrideError(item, f"{'.'.join(path[:depth])} is a value, not a table or list")
    return data
