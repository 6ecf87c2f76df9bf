"""Plugin discovery through an entry-point group, loaded lazily and once."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType

from registry.core import RegistryError, origin


@dataclass(frozen=True)
class Plugin:
    """A loaded entry point and the distribution that provided it."""

    name: str
    value: str
    distribution: str


class PluginError(RegistryError):
    """A plugin's entry point failed to load."""


_loaded: dict[tuple[str, str, str], Plugin] = {}


def load_plugins(group: str) -> list[Plugin]:
    """Import every entry point of `group` not loaded yet; return all loaded ones.

    An entry point names a module (registering on import) or a callable (called
    once with no arguments). Registrations made while loading are attributed to
    the providing distribution. The same entry point seen twice (a distribution
    on ``sys.path`` twice) loads once.
    """
    for ep in entry_points(group=group):
        key = (group, ep.name, ep.value)
        if key in _loaded:
            continue
        dist = ep.dist.name if ep.dist is not None else ep.name
        with origin(dist):
            try:
                obj = ep.load()
                if callable(obj) and not isinstance(obj, ModuleType):
                    obj()
            except RegistryError:
                raise
            except Exception as exc:  # a broken plugin must name itself
                raise PluginError(f"plugin {ep.name!r} ({ep.value}) from {dist} failed to load: {exc}") from exc
        _loaded[key] = Plugin(ep.name, ep.value, dist)
    return [p for k, p in _loaded.items() if k[0] == group]
