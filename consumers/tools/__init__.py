"""Tools agents can call: `@tool` on a typed function, `current_tool()` inside one.

Importing the package registers the built-ins (calculator, now, search_thread,
fetch_url); `load_modules(settings.tool_modules)` adds a deployment's own.
"""

from __future__ import annotations

# The shipped tools register themselves on import.
from consumers.tools import calculator, clock, fetch_url, search_thread
from consumers.tools.context import MessagesSource, ToolCall, current_tool, messages_of
from consumers.tools.definition import Tool, make_tool, schema_tool
from consumers.tools.errors import (
    DuplicateTool,
    NotInToolCall,
    ToolDefinitionError,
    ToolError,
    ToolModuleError,
)
from consumers.tools.execute import CallResult
from consumers.tools.registry import (
    REGISTRY,
    ToolRegistry,
    call,
    load_modules,
    load_modules_or_exit,
    tool,
)

__all__ = [
    "REGISTRY",
    "CallResult",
    "DuplicateTool",
    "MessagesSource",
    "NotInToolCall",
    "Tool",
    "ToolCall",
    "ToolDefinitionError",
    "ToolError",
    "ToolModuleError",
    "ToolRegistry",
    "calculator",
    "call",
    "clock",
    "current_tool",
    "fetch_url",
    "load_modules",
    "load_modules_or_exit",
    "make_tool",
    "messages_of",
    "schema_tool",
    "search_thread",
    "tool",
]
