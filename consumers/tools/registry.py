"""Tools by name: the `@tool` decorator, lookups, and loading SLIPSTREAM_TOOLS modules.

Tools given their schema (`schema_tool`, as consumers/tools/mcp_servers.py makes
for each MCP server's tools) are added with `add` like any other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

from consumers.llm.tool_names import wire_name
from consumers.tools.context import ToolCall
from consumers.tools.definition import Tool, make_tool
from consumers.tools.errors import DuplicateTool, ToolModuleError
from consumers.tools.execute import (
    DEFAULT_TIMEOUT_S,
    MAX_RESULT_BYTES,
    CallResult,
    error_result,
    run_tool,
)

F = TypeVar("F", bound=Callable[..., Any])


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def add(self, tool: Tool) -> Tool:
        existing = self._tools.get(tool.name)
        if existing is not None and existing.fn is not tool.fn:
            raise DuplicateTool(
                f"two functions are named tool {tool.name!r}: {existing.qualname} and "
                f"{tool.qualname}; give one another name with @tool(name=...)"
            )
        # Providers send names as wire names (`mcp.a.b` as `mcp__a__b`): two tools
        # sent under one name could not be told apart in the model's answer.
        wire = wire_name(tool.name)
        for other in self._tools.values():
            if other.name != tool.name and wire_name(other.name) == wire:
                raise DuplicateTool(
                    f"tools {other.name!r} and {tool.name!r} would both be sent to the "
                    f"model as {wire!r}; rename one"
                )
        self._tools[tool.name] = tool
        return tool

    def remove(self, name: str) -> None:
        """Forget a tool (the MCP tools of a worker that stops); unknown names are ignored."""
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return sorted(self._tools)

    def definitions(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """The named tools as the Messages API takes them; an unknown name is a KeyError."""
        return [self._tools[name].definition() for name in names]

    async def call(
        self,
        tool_name: str,
        raw_args: Mapping[str, Any] | Any,
        context: ToolCall,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_result_bytes: int = MAX_RESULT_BYTES,
    ) -> CallResult:
        """Validate and run one call; every failure is a result, only cancellation escapes.

        A tool with its own `timeout_s` (an MCP server's `timeout`) is bounded by it.
        """
        tool = self._tools.get(tool_name)
        if tool is None:
            known = ", ".join(self.names()) or "none"
            return error_result(f"unknown tool {tool_name!r} (known: {known})")
        return await run_tool(
            tool, raw_args, context, timeout_s=timeout_s, max_result_bytes=max_result_bytes
        )


REGISTRY = ToolRegistry()


@overload
def tool(fn: F, /) -> F: ...


@overload
def tool(
    *, name: str | None = None, needs_approval: bool = False, registry: ToolRegistry | None = None
) -> Callable[[F], F]: ...


def tool(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    needs_approval: bool = False,
    registry: ToolRegistry | None = None,
) -> F | Callable[[F], F]:
    """Register a typed function as a tool: `@tool` or `@tool(name=..., needs_approval=True)`.

    The function stays as it was (callable directly, e.g. in tests); its tool is
    `REGISTRY.get(name)`.
    """

    def register(fn: F) -> F:
        (registry or REGISTRY).add(make_tool(fn, name=name, needs_approval=needs_approval))
        return fn

    return register(fn) if fn is not None else register


async def call(
    tool_name: str,
    raw_args: Mapping[str, Any] | Any,
    context: ToolCall,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_result_bytes: int = MAX_RESULT_BYTES,
) -> CallResult:
    """`REGISTRY.call`: run one call of a registered tool."""
    return await REGISTRY.call(
        tool_name, raw_args, context, timeout_s=timeout_s, max_result_bytes=max_result_bytes
    )


def load_modules(modules: Iterable[str]) -> None:
    """Import the modules that define a deployment's own tools (SLIPSTREAM_TOOLS)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise ToolModuleError(
                f"SLIPSTREAM_TOOLS names {module!r}, which cannot be imported: "
                f"{type(exc).__name__}: {detail}"
            ) from exc


def load_modules_or_exit(modules: Iterable[str]) -> None:
    """For the processes' entry points: a tool module that cannot load stops the process."""
    import sys

    try:
        load_modules(modules)
    except ToolModuleError as exc:
        sys.exit(f"configuration error: {exc}")
