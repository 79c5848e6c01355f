"""A tool: a typed function, its description and the JSON Schema of its parameters."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

from consumers.tools.errors import ToolDefinitionError

# What the Anthropic Messages API accepts as a tool name.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Untitled(GenerateJsonSchema):
    """Schemas without the generated titles: they repeat the names and cost the model tokens."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: Any) -> JsonSchemaValue:
        generated = super().model_schema(schema)
        generated.pop("title", None)
        return generated


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    fn: Callable[..., Any]
    needs_approval: bool
    is_async: bool
    arguments: type[BaseModel]
    input_schema: dict[str, Any]

    @property
    def qualname(self) -> str:
        return _qualname(self.fn)

    def definition(self) -> dict[str, Any]:
        """The tool as the Anthropic Messages API takes it."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }

    def keywords(self, validated: BaseModel) -> dict[str, Any]:
        """The validated arguments as the function's keyword arguments (Python values)."""
        return {
            info.alias: getattr(validated, field)
            for field, info in type(validated).model_fields.items()
            if info.alias is not None
        }


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def make_tool(
    fn: Callable[..., Any], *, name: str | None = None, needs_approval: bool = False
) -> Tool:
    """Check `fn`'s signature and build its tool; a signature that cannot be one is refused."""
    where = _qualname(fn)
    key: str = name or str(getattr(fn, "__name__", ""))
    if not TOOL_NAME.match(key):
        raise ToolDefinitionError(
            f"tool name {key!r} ({where}) must be 1-64 letters, digits, '_' or '-'"
        )
    if inspect.isasyncgenfunction(inspect.unwrap(fn)) or inspect.isgeneratorfunction(fn):
        raise ToolDefinitionError(f"tool {key!r} ({where}) is a generator; return a value instead")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ToolDefinitionError(
            f"tool {key!r} ({where}): its annotations cannot be resolved: {exc}"
        ) from exc
    fields: dict[str, Any] = {}
    for index, param in enumerate(inspect.signature(fn).parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(
                f"tool {key!r} ({where}): parameter {param.name!r} is *args or **kwargs; "
                "a tool takes named, typed parameters only"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise ToolDefinitionError(
                f"tool {key!r} ({where}): parameter {param.name!r} is positional-only; "
                "the model passes arguments by name"
            )
        if param.name not in hints:
            raise ToolDefinitionError(
                f"tool {key!r} ({where}): parameter {param.name!r} has no type annotation; "
                "the type is what the model is told to send"
            )
        default = ... if param.default is param.empty else param.default
        # Fields are named p0, p1, ... with the parameter's name as alias, so a
        # parameter may be called `json` or `schema` without shadowing BaseModel.
        fields[f"p{index}"] = (hints[param.name], Field(default, alias=param.name))
    try:
        arguments = create_model(
            f"{key}_arguments",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
        schema = arguments.model_json_schema(schema_generator=_Untitled)
    except Exception as exc:
        raise ToolDefinitionError(
            f"tool {key!r} ({where}): its parameters have no JSON Schema: {exc}"
        ) from exc
    return Tool(
        name=key,
        description=inspect.getdoc(fn) or "",
        fn=fn,
        needs_approval=needs_approval,
        # unwrap: a decorator over an async function may hide that it is one.
        is_async=inspect.iscoroutinefunction(inspect.unwrap(fn)),
        arguments=arguments,
        input_schema=schema,
    )
