"""Models for tests: scripted answers with failures and pauses where a test wants them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from consumers.llm.base import Prompt
from consumers.llm.parts import Part, TextPart
from consumers.llm.scripted import ScriptedLLM
from slipstream.errors import ProviderError


class FlakyLLM:
    """Fails the first calls as told (`None` means answer), then answers like the scripted model."""

    name = "flaky"

    def __init__(
        self, failures: list[ProviderError | None], *, words: int = 20, delay_ms: int = 0
    ) -> None:
        self.plan = list(failures)
        self.calls = 0
        self.scripted = ScriptedLLM(words=words, delay_ms=delay_ms)

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        self.calls += 1
        failure = self.plan.pop(0) if self.plan else None
        if failure is not None:
            yield TextPart("Some text before ")
            raise failure
        async for part in self.scripted.stream(prompt):
            yield part


class GatedLLM:
    """Answers one word, then waits for the test to open the gate: a model between tokens."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.closed = asyncio.Event()

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        try:
            yield TextPart("First. ")
            self.started.set()
            await self.gate.wait()
            yield TextPart("Second.")
        finally:
            self.closed.set()
