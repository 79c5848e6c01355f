"""The offline model: a deterministic reply derived from the prompt it answers.

Useful for demos and tests: the same prompt always gets the same answer, word by
word, with a configurable pause between words. The answer says it comes from the
offline demo model, quotes the message and shows some markdown
(`consumers.llm.demo_reply`). A message that starts with
``echo:`` is answered with the rest of it, verbatim, so tests can make the model
say exactly what they need (markup, links, long text).

It also follows the directives of `consumers.llm.directives`, so the agent loop
runs offline (the contract is DESIGN.md's "scripted model"):

- `[[tool NAME {json}]]`: its first turn after the message is one ToolCallPart per
  directive, in order, with exactly those arguments and no text, then
  StopPart("tool_use"). NAME is a tool's name or its wire name (`mcp__files__read`
  for `mcp.files.read`: consumers/llm/tool_names.py), called by its name. Once the
  results are back in the prompt it writes, for each call, `NAME returned RESULT.`
  (NAME the tool's name, RESULT as compact JSON), then its usual answer.
- `[[handoff AGENT]]`: once any tool results are back, a turn with one call of the
  tool `handoff` with the arguments `{"agent": AGENT}`. The turn that sees that
  call's result in its history (AGENT's, after the hand-off) answers as usual.
- A prompt with `classify` set is answered with one agent name: the first of
  `classify.agents` whose name appears as a word in the message (any case), else
  `classify.default`.
- Every call ends with a UsagePart (input: words of the system prompt and of every
  message, tool calls and results as compact JSON; output: words of text written;
  model "scripted") and a StopPart.

Directives are never echoed: the usual answer is that of the message without them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic import JsonValue

from consumers.llm.base import (
    ChatMessage,
    Classification,
    Prompt,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from consumers.llm.demo_reply import demo_reply
from consumers.llm.directives import read_directives
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from consumers.llm.tool_names import registry_names

ECHO_PREFIX = "echo:"


def scripted_reply(text: str, words: int) -> str:
    """The whole reply the scripted model gives to `text`."""
    if text.startswith(ECHO_PREFIX):
        return text[len(ECHO_PREFIX) :].strip()
    return demo_reply(text, words)


def chunks(reply: str) -> list[str]:
    """Split a reply into word chunks that join back to it exactly."""
    return re.findall(r"\s*\S+", reply) or [reply]


HANDOFF_TOOL = "handoff"
MODEL_NAME = "scripted"


def compact_json(value: JsonValue) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def prompt_words(prompt: Prompt) -> int:
    """The scripted model's input tokens: words of the system prompt and every message."""
    words = len(prompt.system.split())
    for message in prompt.messages:
        for block in message.blocks:
            if isinstance(block, TextBlock):
                words += len(block.text.split())
            elif isinstance(block, ToolUseBlock):
                words += len(block.name.split()) + len(compact_json(block.args).split())
            else:
                result = block.result
                words += len((result if isinstance(result, str) else compact_json(result)).split())
    return words


def classify(message: str, choice: Classification) -> str:
    """The first agent whose name is a word of `message`, else the default."""
    for agent in choice.agents:
        if re.search(rf"(?<!\w){re.escape(agent)}(?!\w)", message, re.IGNORECASE):
            return agent
    return choice.default


@dataclass(frozen=True)
class Turn:
    """What the scripted model does for one prompt: call tools, or write text."""

    calls: tuple[ToolCallPart, ...] = ()
    text: str = ""


def scripted_turn(prompt: Prompt, words: int) -> Turn:
    """The whole turn the scripted model gives to `prompt` (a pure function of it)."""
    asked, since = _split_at_question(prompt)
    # The message it answers: as sent, else the last user turn with text.
    question = prompt.question or (prompt.messages[asked].text if asked >= 0 else "")
    if prompt.classify is not None:
        return Turn(text=classify(question, prompt.classify))
    directives = read_directives(question)
    made = [b for m in since if m.role == "assistant" for b in m.blocks]
    calls = [b for b in made if isinstance(b, ToolUseBlock)]
    results = {
        b.call_id: b.result
        for m in since
        if m.role == "user"
        for b in m.blocks
        if isinstance(b, ToolResultBlock)
    }
    tools = directives.tools
    if tools and not any(c.name != HANDOFF_TOOL for c in calls):
        ids = _call_ids(question, asked, "tool", len(tools))
        # A directive may name a tool as a real model would (`mcp__files__read`).
        names = registry_names(t.name for t in prompt.tools)
        return Turn(
            calls=tuple(
                ToolCallPart(i, names.get(t.name, t.name), t.args)
                for i, t in zip(ids, tools, strict=True)
            )
        )
    handoff = directives.handoff
    if handoff is not None and not any(c.name == HANDOFF_TOOL for c in calls):
        [call_id] = _call_ids(question, asked, "handoff", 1)
        return Turn(calls=(ToolCallPart(call_id, HANDOFF_TOOL, {"agent": handoff.agent}),))
    sentences = [
        f"{c.name} returned {compact_json(results[c.call_id])}."
        for c in calls
        if c.name != HANDOFF_TOOL and c.call_id in results
    ]
    answer = scripted_reply(directives.text, words)
    return Turn(text=" ".join([*sentences, answer]) if sentences else answer)


def _split_at_question(prompt: Prompt) -> tuple[int, tuple[ChatMessage, ...]]:
    """The index of the message being answered (the last user turn with text) and the
    turns after it: the tool calls and results of this answer so far."""
    for index in range(len(prompt.messages) - 1, -1, -1):
        message = prompt.messages[index]
        if message.role == "user" and any(
            isinstance(b, TextBlock) and b.text for b in message.blocks
        ):
            return index, prompt.messages[index + 1 :]
    return -1, prompt.messages


def _call_ids(question: str, asked: int, kind: str, count: int) -> list[str]:
    # Deterministic, and distinct for the same question asked at another point of a thread.
    seed = f"{asked}\n{kind}\n{question}".encode()
    digest = hashlib.sha256(seed).hexdigest()[:12]
    return [f"call_{digest}_{i}" for i in range(count)]


class ScriptedLLM:
    name = "scripted"

    def __init__(self, *, words: int = 80, delay_ms: int = 40) -> None:
        self.words = words
        self.delay = delay_ms / 1000

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        turn = scripted_turn(prompt, self.words)
        for call in turn.calls:
            yield call
        written = 0
        if turn.text:
            for i, chunk in enumerate(chunks(turn.text)):
                if self.delay and i:
                    await asyncio.sleep(self.delay)
                written += len(chunk.split())
                yield TextPart(chunk)
        yield UsagePart(
            input_tokens=prompt_words(prompt),
            output_tokens=written,
            cache_read_tokens=0,
            cache_write_tokens=0,
            model=MODEL_NAME,
        )
        yield StopPart("tool_use" if turn.calls else "end_turn")
