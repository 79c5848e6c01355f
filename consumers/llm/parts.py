"""What a model stream yields: typed parts instead of bare text.

A call yields its text and tool calls in the order the model produced them,
then at most one `UsagePart` and, when it ended normally, one `StopPart`. A
call that fails after the model started may yield its `UsagePart` just before
the `ProviderError`, so the tokens of a failed attempt are still counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import JsonValue

# The reasons the Messages API gives; a provider may pass others through as they are.
StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence"] | str


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ToolCallPart:
    """One tool call, yielded only once its input has fully arrived and parsed."""

    call_id: str
    name: str
    args: dict[str, JsonValue]


@dataclass(frozen=True)
class UsagePart:
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    model: str


@dataclass(frozen=True)
class StopPart:
    reason: StopReason


Part = TextPart | ToolCallPart | UsagePart | StopPart
