"""Pydantic glue: values a TOML file can write for an optional field's None ("off")."""

from __future__ import annotations

from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

OffValue = str | int | float | bool


class Off:
    """Annotation (``Annotated[float | None, Off("off", 0)]``) naming the values that mean None.

    TOML has no null, so an optional field needs a value a file (or ``--set``)
    can write for None. The values given here validate to None; None is written
    (JSON-mode dumps, hence spec.toml) as the first of them; the JSON schema
    lists them in place of ``null``. Python-mode dumps keep None.
    """

    def __init__(self, written: OffValue, *also: OffValue) -> None:
        self.values: tuple[OffValue, ...] = (written, *also)

    def means_none(self, value: Any) -> bool:
        """Whether `value` is one of the off values (``0`` matches ``0.0``, never ``False``)."""
        return any(isinstance(value, bool) == isinstance(v, bool) and value == v for v in self.values)

    def spelled(self) -> str:
        """The off values as a TOML user writes them: ``"random"``, ``one of "off", 0``."""
        words = ", ".join(_toml(v) for v in self.values)
        return words if len(self.values) == 1 else f"one of {words}"

    def type_name(self, name: str) -> str:
        """The name of an optional type (``int | None``) with None spelled as TOML: ``int | "random"``."""
        if name.startswith("Optional[") and name.endswith("]"):
            name = name[len("Optional[") : -1]
        kept = [part for part in name.split(" | ") if part != "None"]
        return " | ".join([*kept, *(_toml(v) for v in self.values)])

    def _validate(self, value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
        if self.means_none(value):
            return None
        try:
            return handler(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["loc"]:  # an error inside a table: its own key path says more
                raise
            raise PydanticCustomError(
                "off_value", "{msg}, or {off}", {"msg": first["msg"], "off": self.spelled()}
            ) from None

    def _serialize(self, value: Any, handler: core_schema.SerializerFunctionWrapHandler) -> Any:
        return self.values[0] if value is None else handler(value)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        inner = handler(source)
        return core_schema.no_info_wrap_validator_function(
            self._validate,
            inner,
            serialization=core_schema.wrap_serializer_function_ser_schema(
                self._serialize, schema=inner, when_used="json"
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = dict(handler(schema))
        off = {"enum": list(self.values)}
        choices = [c for c in json_schema.pop("anyOf", []) if c != {"type": "null"}]
        if not choices:  # a single schema (e.g. a reference): keep it as one choice
            choices = [{k: json_schema.pop(k) for k in list(json_schema) if k not in _ANNOTATION_KEYS}]
        json_schema["anyOf"] = [*choices, off]
        return json_schema


_ANNOTATION_KEYS = ("title", "description", "default", "examples")


class OffJsonSchema(GenerateJsonSchema):
    """JSON schema generator writing a None default of an `Off` field as its off value."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        off = off_of(schema["schema"])
        if off is not None and "default" in json_schema and json_schema["default"] is None:
            json_schema["default"] = off.values[0]
        return json_schema


def off_of(schema: core_schema.CoreSchema) -> Off | None:
    """The `Off` annotation a core schema was built from, if any."""
    function: Any = schema.get("function", {})
    owner = getattr(function.get("function") if isinstance(function, dict) else None, "__self__", None)
    return owner if isinstance(owner, Off) else None


def _toml(value: OffValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
