"""Generic typed component registries with pydantic params and entry-point plugins."""

from registry.core import (
    BUILTIN,
    DuplicateComponentError,
    Entry,
    Params,
    Registry,
    RegistryError,
    UnknownComponentError,
    origin,
    unknown_message,
)
from registry.off import Off, OffJsonSchema
from registry.plugins import Plugin, PluginError, load_plugins
from registry.schema import ComponentRef, component_type, tagged_model

__all__ = [
    "BUILTIN",
    "ComponentRef",
    "DuplicateComponentError",
    "Entry",
    "Off",
    "OffJsonSchema",
    "Params",
    "Plugin",
    "PluginError",
    "Registry",
    "RegistryError",
    "UnknownComponentError",
    "component_type",
    "load_plugins",
    "origin",
    "tagged_model",
    "unknown_message",
]
