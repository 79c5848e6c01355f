"""A tool: a typed function, its description and the JSON Schema of its parameters.

Or a tool given its schema (`schema_tool`: an MCP server's), whose input is checked
against that schema and passed whole to an async callable.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

from consumers.tools.errors import ToolDefinitionError
from consumers.tools.schema_check import schema_problem

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
    # None: a tool given its schema; its input is checked against `input_schema`
    # and `fn` gets it as one dict.
    arguments: type[BaseModel] | None
    input_schema: dict[str, Any]
    timeout_s: float | None = None  # else the caller's bound

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


def schema_tool(
    name: str,
    description: str,
    input_schema: dict[str, Any],
    fn: Callable[[dict[str, Any]], Awaitable[Any]],
    *,
    needs_approval: bool = False,
    timeout_s: float | None = None,
) -> Tool:
    """A tool whose JSON Schema is given (not derived from a signature): `fn(arguments)`.

    The name is the registry's and may hold dots (`mcp.files.read`); providers send
    it as a wire name (consumers/llm/tool_names.py). A schema that is not a valid
    JSON Schema object is refused.
    """
    if not name or len(name) > 200 or any(c.isspace() for c in name):
        raise ToolDefinitionError(f"tool name {name!r} must be 1-200 characters, no spaces")
    problem = schema_error(input_schema)
    if problem is not None:
        raise ToolDefinitionError(f"tool {name!r}: its input schema is not usable: {problem}")
    return Tool(
        name=name,
        description=description,
        fn=fn,
        needs_approval=needs_approval,
        is_async=True,
        arguments=None,
        input_schema=input_schema,
        timeout_s=timeout_s,
    )


def schema_error(schema: Any) -> str | None:
    """Why `schema` cannot be a tool's input schema, or None."""
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return "it must be a JSON Schema of type object"
    return schema_problem(schema)


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
