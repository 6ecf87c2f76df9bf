"""A small typed registry: one per component kind, names mapped to factories."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from registry.off import Off

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

BUILTIN = "built-in"
_origin: ContextVar[str] = ContextVar("registry_origin", default=BUILTIN)


class Params(BaseModel):
    """Base of every component's parameters: strict keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistryError(LookupError):
    """Base error of the registry package."""


class DuplicateComponentError(RegistryError):
    """A name was registered twice in one registry."""


class UnknownComponentError(RegistryError):
    """A name is not registered; the message lists close matches."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        super().__init__(unknown_message(kind, name, known))


def unknown_message(kind: str, name: str, known: list[str]) -> str:
    """'unknown sampler 'torch-exat'; did you mean 'torch-exact'?' style text."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    msg = f"unknown {kind} {name!r}"
    if close:
        msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    if known:
        msg += f" (known: {', '.join(known)})"
    return msg


@contextmanager
def origin(name: str) -> Iterator[None]:
    """Attribute registrations made inside the block to `name` (a distribution)."""
    token = _origin.set(name)
    try:
        yield
    finally:
        _origin.reset(token)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., T]
    params: type[Params]
    summary: str
    origin: str

    def build(self, params: Params, *args: Any, **kwargs: Any) -> T:
        """Call the factory with validated params and any kind-specific arguments."""
        return self.factory(params, *args, **kwargs)

    def param_rows(self) -> list[dict[str, Any]]:
        """Name, type, default and description of each parameter."""
        rows = []
        for fname, info in self.params.model_fields.items():
            default: Any = None if info.is_required() else info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump()
            type_name = _type_name(info.annotation)
            off = next((m for m in info.metadata if isinstance(m, Off)), None)
            if off is not None:  # None as a TOML user writes it
                type_name, default = off.type_name(type_name), off.values[0] if default is None else default
            rows.append(
                {
                    "name": info.alias or fname,  # the spelling a spec uses
                    "type": type_name,
                    "required": info.is_required(),
                    "default": default,
                    "description": info.description or "",
                }
            )
        return rows


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


class Registry(Generic[T]):
    """Names → factories for one kind of component (detectron2 style, typed)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, *, params: type[Params] = Params, summary: str = ""
    ) -> Callable[[F], F]:
        """Decorator registering `factory` under `name` with its params model."""

        def deco(factory: F) -> F:
            self.add(name, factory, params=params, summary=summary)
            return factory

        return deco

    def add(
        self, name: str, factory: Callable[..., T], *, params: type[Params] = Params, summary: str = ""
    ) -> Entry[T]:
        """Register without a decorator."""
        if name in self._entries:
            prev = self._entries[name]
            raise DuplicateComponentError(
                f"{self.kind} {name!r} is already registered (by {prev.origin})"
            )
        if not summary and factory.__doc__:
            summary = factory.__doc__.strip().splitlines()[0]
        entry = Entry(self.kind, name, factory, params, summary, _origin.get())
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry[T]:
        """The entry named `name`; `UnknownComponentError` with suggestions otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.kind, name, self.names()) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style wildcard."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def entries(self, pattern: str = "*") -> list[Entry[T]]:
        """Entries whose names match `pattern`, sorted by name."""
        return [self._entries[n] for n in self.names(pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
