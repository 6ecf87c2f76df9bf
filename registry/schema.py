"""Pydantic glue: tables that name a registered component by a tag and carry its params."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import Field, GetCoreSchemaHandler, create_model
from pydantic_core import PydanticCustomError, core_schema

from registry.core import Entry, Params, unknown_message

if TYPE_CHECKING:
    from registry.core import Registry


def component_type(params: Params, tag: str = "type") -> str:
    """The component name a validated params object was tagged with (its ``type``)."""
    name = getattr(params, tag, None)
    if not isinstance(name, str):
        raise TypeError(f"{type(params).__name__} carries no {tag!r}: it was not validated through a registry ref")
    return name


def tagged_model(entry: Entry[Any], tag: str = "type") -> type[Params]:
    """`entry.params` extended with a literal `tag` field naming the component."""
    literal: Any = Literal[entry.name]
    fields: dict[str, Any] = {tag: (literal, Field(default=entry.name, description=f"{entry.kind} type"))}
    model = create_model(
        f"{entry.kind.title().replace('-', '')}_{entry.name.replace('-', '_')}",
        __base__=entry.params,
        __doc__=entry.summary or entry.params.__doc__,
        **fields,
    )
    return cast(type[Params], model)


class ComponentRef:
    """Annotation (``Annotated[Params, ComponentRef(REGISTRY)]``) for a component table.

    The union of accepted components is read from the registry each time a
    schema is generated, so components registered by plugins take part as long
    as the models using this annotation are (re)built after the plugins load.
    """

    def __init__(self, registry: Registry[Any], *, tag: str = "type", default: str | None = None) -> None:
        self.registry, self.tag, self.default = registry, tag, default

    def _check_tag(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        known = self.registry.names()
        name = value.get(self.tag, self.default)
        if name is None:
            raise PydanticCustomError(
                "missing_component_type",
                "missing '{tag}': name the {kind} (one of: {known})",
                {"tag": self.tag, "kind": self.registry.kind, "known": ", ".join(known)},
            )
        if not isinstance(name, str) or name not in self.registry:
            raise PydanticCustomError(
                "unknown_component", "{msg}", {"msg": unknown_message(self.registry.kind, str(name), known)}
            )
        return {**value, self.tag: name}

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        entries = self.registry.entries()
        if not entries:
            return handler(source)
        choices = {e.name: handler.generate_schema(tagged_model(e, self.tag)) for e in entries}
        union = core_schema.tagged_union_schema(choices, discriminator=self.tag)
        return core_schema.no_info_before_validator_function(self._check_tag, union)
