"""Errors of the tools layer, each saying what to fix."""

from __future__ import annotations

from slipstream.errors import SlipstreamError


class ToolDefinitionError(SlipstreamError, TypeError):
    """A function cannot be a tool as written (an untyped parameter, *args, a bad name)."""


class DuplicateTool(SlipstreamError, ValueError):
    """Two functions claim one tool name."""


class NotInToolCall(SlipstreamError, RuntimeError):
    """`current_tool()` was called outside a tool call."""

    def __init__(self) -> None:
        super().__init__(
            "current_tool() is only available inside a tool while it runs "
            "(called through consumers.tools.call)"
        )


class ToolModuleError(SlipstreamError, ImportError):
    """A module named in SLIPSTREAM_TOOLS could not be imported."""


class ToolError(SlipstreamError):
    """Raised by a tool for an error the model should read: its message alone is the result."""
