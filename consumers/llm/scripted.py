"""The offline model: a deterministic reply derived from the message it answers.

Useful for demos and tests: the same message always gets the same answer,
word by word, with a configurable pause between words. A message that starts
with ``echo:`` is answered with the rest of it, verbatim, so tests can make
the model say exactly what they need (markup, links, long text).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncIterator

from consumers.llm.base import Prompt

ECHO_PREFIX = "echo:"

_VOCABULARY = [
    "stream",
    "event",
    "worker",
    "thread",
    "answer",
    "token",
    "journal",
    "replay",
    "lease",
    "fence",
    "partition",
    "projection",
    "cursor",
    "signal",
    "timer",
    "step",
    "agent",
    "message",
    "delta",
    "view",
    "socket",
    "browser",
    "consumer",
    "group",
    "redis",
    "durable",
    "async",
    "runs",
    "queue",
    "order",
    "state",
    "history",
    "offset",
    "snapshot",
    "resume",
    "retry",
    "backoff",
    "cancel",
    "complete",
    "batch",
    "flush",
    "append",
    "index",
    "feed",
    "reader",
    "writer",
    "checkpoint",
    "schema",
    "version",
    "model",
    "prompt",
    "reply",
    "sentence",
    "word",
]
_GLUE = ("the", "a", "every", "each", "its", "one", "and", "then", "so", "with", "from", "into")


def scripted_reply(text: str, words: int) -> str:
    """The whole reply the scripted model gives to `text`."""
    if text.startswith(ECHO_PREFIX):
        return text[len(ECHO_PREFIX) :].strip()
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    sentences: list[str] = []
    remaining = words
    while remaining > 0:
        length = min(remaining, rng.randint(6, 14))
        chosen = [
            rng.choice(_GLUE) if i % 3 == 1 else rng.choice(_VOCABULARY) for i in range(length)
        ]
        chosen[0] = chosen[0].capitalize()
        sentences.append(" ".join(chosen) + rng.choice((".", ".", ".", "!", "?")))
        remaining -= length
    return " ".join(sentences)


def chunks(reply: str) -> list[str]:
    """Split a reply into word chunks that join back to it exactly."""
    return re.findall(r"\s*\S+", reply) or [reply]


class ScriptedLLM:
    name = "scripted"

    def __init__(self, *, words: int = 80, delay_ms: int = 40) -> None:
        self.words = words
        self.delay = delay_ms / 1000

    async def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        for i, chunk in enumerate(chunks(scripted_reply(prompt.question, self.words))):
            if self.delay and i:
                await asyncio.sleep(self.delay)
            yield chunk
