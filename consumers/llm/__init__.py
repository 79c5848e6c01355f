"""LLM providers behind one interface."""

from __future__ import annotations

from consumers.llm.base import (
    LLM,
    ChatMessage,
    Classification,
    ContentBlock,
    Prompt,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from slipstream.config import Settings


def provider_from_settings(settings: Settings) -> LLM:
    if settings.llm == "anthropic":
        from consumers.llm.anthropic import AnthropicLLM

        return AnthropicLLM(
            api_key=settings.anthropic_api_key,
            model=settings.anthropic_model,
            max_tokens=settings.anthropic_max_tokens,
            max_retries=settings.anthropic_max_retries,
        )
    from consumers.llm.scripted import ScriptedLLM

    return ScriptedLLM(words=settings.scripted_words, delay_ms=settings.scripted_delay_ms)


__all__ = [
    "LLM",
    "ChatMessage",
    "Classification",
    "ContentBlock",
    "Part",
    "Prompt",
    "StopPart",
    "TextBlock",
    "TextPart",
    "ToolCallPart",
    "ToolResultBlock",
    "ToolSpec",
    "ToolUseBlock",
    "UsagePart",
    "provider_from_settings",
]
