"""The one interface every LLM provider implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class Prompt:
    """A conversation to answer. `messages` alternate roles and start with the user.

    A trailing assistant message is a prefill: the model continues that text.
    """

    system: str
    messages: tuple[ChatMessage, ...]
    question: str = ""  # the message being answered, as sent (turns may merge several)


class LLM(Protocol):
    """Streams the answer to a prompt as text chunks.

    Raises `slipstream.errors.ProviderError` (with `retryable`) when the model
    fails, before or in the middle of the answer.
    """

    name: str

    def stream(self, prompt: Prompt) -> AsyncIterator[str]: ...
