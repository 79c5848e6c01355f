"""What the agent layer's spans say (slipstream/tracing.py): a model call's usage, a tool
call's name, id and outcome, in the GenAI semantic conventions' names."""

from __future__ import annotations

from opentelemetry.trace import Span, StatusCode

from consumers.llm.parts import ToolCallPart, UsagePart
from consumers.tools import CallResult
from slipstream import tracing


def record_usage(span: Span, usage: UsagePart | None) -> None:
    """The call's tokens, as far as the provider said them (also for a failed call)."""
    if usage is not None:
        tracing.record_usage(span, usage.input_tokens, usage.output_tokens, usage.model)


def tool_attributes(call: ToolCallPart, run_id: str) -> dict[str, str | int]:
    return {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.call_id,
        "slipstream.run": run_id,
    }


def note_tool_result(span: Span, result: CallResult) -> None:
    """A tool's error result is an answer for the model, not an exception: marked here."""
    if result.is_error:
        span.set_status(StatusCode.ERROR, "the tool returned an error")
