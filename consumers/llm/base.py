"""The one interface every LLM provider implements, and the prompt it answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import JsonValue

from consumers.llm.parts import Part


@dataclass(frozen=True)
class TextBlock:
    text: str


@dataclass(frozen=True)
class ToolUseBlock:
    """A tool call the assistant made earlier in the conversation."""

    call_id: str
    name: str
    args: dict[str, JsonValue]


@dataclass(frozen=True)
class ToolResultBlock:
    """What a tool call returned, sent back in a user message. `result` is any JSON;
    providers that want text send a string as it is and anything else as compact JSON."""

    call_id: str
    result: JsonValue
    is_error: bool = False


ContentBlock = TextBlock | ToolUseBlock | ToolResultBlock


@dataclass(frozen=True)
class ChatMessage:
    """One turn. `content` is plain text (the usual case) or a tuple of content blocks."""

    role: Literal["user", "assistant"]
    content: str | tuple[ContentBlock, ...]

    @property
    def blocks(self) -> tuple[ContentBlock, ...]:
        if isinstance(self.content, str):
            return (TextBlock(self.content),)
        return self.content

    @property
    def text(self) -> str:
        """The message's text blocks, joined (tool calls and results left out)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: `input_schema` is a JSON Schema object."""

    name: str
    description: str
    input_schema: dict[str, JsonValue]


@dataclass(frozen=True)
class Classification:
    """Marks a prompt as a router's question: answer with one of `agents`, else `default`."""

    agents: tuple[str, ...]
    default: str


@dataclass(frozen=True)
class Prompt:
    """A conversation to answer. `messages` alternate roles and start with the user.

    A trailing assistant message is a prefill: the model continues that text.
    """

    system: str
    messages: tuple[ChatMessage, ...]
    question: str = ""  # the message being answered, as sent (turns may merge several)
    tools: tuple[ToolSpec, ...] = field(default=())
    classify: Classification | None = None
    # The agent's own choices (agents file); None: the provider's defaults.
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None


class LLM(Protocol):
    """Streams the answer to a prompt as typed parts (see `consumers.llm.parts`).

    Raises `slipstream.errors.ProviderError` (with `retryable`) when the model
    fails, before or in the middle of the answer.
    """

    name: str

    def stream(self, prompt: Prompt) -> AsyncIterator[Part]: ...
