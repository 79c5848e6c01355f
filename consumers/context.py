"""What of a thread the model is sent: tool turns repaired, and the thread cut to a budget.

Pure functions over `ChatMessage`s (no Redis, no I/O), used by `consumers.prompt`
(the history, cut to the agent's budget) and `consumers.agent_loop` (every prompt,
repaired just before it goes to the model).

The Messages API refuses a conversation where a `tool_use` is not answered by a
`tool_result` in the very next (user) message, or a result answers no call of the
message before it. `repaired` makes any history sendable: an orphan result is
dropped, a call without its result gets an error result (`NO_RESULT`), roles are
merged so that they alternate, and the conversation starts with the user.

Tokens are estimated, not counted: about 4 characters per token (`CHARS_PER_TOKEN`,
a fair figure for English prose; code and non-Latin scripts run denser), plus a
few tokens per message for the role markers. Counting exactly would need a model
call (Anthropic's count_tokens) before every answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from consumers.llm.base import (
    ChatMessage,
    ContentBlock,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4  # role and turn markers
NO_RESULT = "no result: the run ended before the tool finished"


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def block_tokens(block: ContentBlock) -> int:
    if isinstance(block, TextBlock):
        return estimate_tokens(block.text)
    if isinstance(block, ToolUseBlock):
        return estimate_tokens(block.name) + estimate_tokens(_compact(block.args))
    result = block.result
    return estimate_tokens(result if isinstance(result, str) else _compact(result))


def message_tokens(message: ChatMessage) -> int:
    return MESSAGE_OVERHEAD_TOKENS + sum(block_tokens(b) for b in message.blocks)


def fixed_tokens(system: str, tools: Sequence[ToolSpec]) -> int:
    """What every call sends besides the messages: the system prompt and the tools."""
    return estimate_tokens(system) + sum(
        estimate_tokens(t.name)
        + estimate_tokens(t.description)
        + estimate_tokens(_compact(t.input_schema))
        for t in tools
    )


# --- repair -------------------------------------------------------------------------


def repaired(messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """`messages` as the Messages API accepts them (see the module's docstring).

    Also: empty text is dropped (the API refuses empty text blocks), a call id
    seen before is dropped (ids must be unique), and in an assistant message the
    tool calls go after its text, in a user message the results before its text
    (where the API wants them). A history that needs none of this comes back equal.
    """
    current = tuple(messages)
    # Each pass can empty a message (its only blocks were orphans), which can make
    # two messages of one role meet again: repeat until nothing changes.
    for _ in range(len(current) + 2):
        following = _pass(current)
        if following == current:
            break
        current = following
    return current


def _pass(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    merged = _merged(messages)
    while merged and merged[0][0] != "user":
        merged.pop(0)  # a conversation starts with the user
    out: list[tuple[str, list[ContentBlock]]] = []
    seen: set[str] = set()
    pending: list[ToolUseBlock] = []  # the last assistant message's calls
    for role, blocks in merged:
        if role == "assistant":
            texts: list[ContentBlock] = [b for b in blocks if isinstance(b, TextBlock)]
            pending = []
            for block in blocks:
                if isinstance(block, ToolUseBlock) and block.call_id not in seen:
                    seen.add(block.call_id)
                    pending.append(block)
            out.append((role, [*texts, *pending]))
        else:
            results: dict[str, ToolResultBlock] = {}
            for block in blocks:
                if isinstance(block, ToolResultBlock):
                    results.setdefault(block.call_id, block)
            answered: list[ContentBlock] = [
                results.get(c.call_id) or ToolResultBlock(c.call_id, NO_RESULT, is_error=True)
                for c in pending
            ]
            texts = [b for b in blocks if isinstance(b, TextBlock)]
            out.append((role, [*answered, *texts]))
            pending = []
    if pending:  # the last message made calls: they get their error results
        out.append(
            ("user", [ToolResultBlock(c.call_id, NO_RESULT, is_error=True) for c in pending])
        )
    return tuple(_message(role, blocks) for role, blocks in _merged_blocks(out))


def _merged(messages: Sequence[ChatMessage]) -> list[tuple[str, list[ContentBlock]]]:
    return _merged_blocks([(m.role, list(m.blocks)) for m in messages])


def _merged_blocks(
    messages: Sequence[tuple[str, list[ContentBlock]]],
) -> list[tuple[str, list[ContentBlock]]]:
    """Empty text and empty messages dropped; neighbours of one role joined."""
    out: list[tuple[str, list[ContentBlock]]] = []
    for role, blocks in messages:
        kept = [b for b in blocks if not (isinstance(b, TextBlock) and not b.text)]
        if not kept:
            continue
        if out and out[-1][0] == role:
            out[-1] = (role, _join(out[-1][1], kept))
        else:
            out.append((role, kept))
    return out


def _join(first: list[ContentBlock], second: list[ContentBlock]) -> list[ContentBlock]:
    """Two messages of one role as one; two texts that meet become one text."""
    if first and second and isinstance(first[-1], TextBlock) and isinstance(second[0], TextBlock):
        return [*first[:-1], TextBlock(first[-1].text + "\n\n" + second[0].text), *second[1:]]
    return [*first, *second]


def _message(role: str, blocks: list[ContentBlock]) -> ChatMessage:
    assert role in ("user", "assistant")
    only_text = len(blocks) == 1 and isinstance(blocks[0], TextBlock)
    content: str | tuple[ContentBlock, ...] = (
        blocks[0].text if only_text and isinstance(blocks[0], TextBlock) else tuple(blocks)
    )
    return ChatMessage("user" if role == "user" else "assistant", content)


# --- the budget ---------------------------------------------------------------------


@dataclass(frozen=True)
class Trimmed:
    """The messages kept, how many were left out, and the estimate of what is sent."""

    messages: tuple[ChatMessage, ...]
    dropped: int
    estimated_tokens: int
    budget: int

    @property
    def kept(self) -> int:
        return len(self.messages)


def trimmed(messages: Sequence[ChatMessage], budget: int, *, fixed: int = 0) -> Trimmed:
    """The newest messages that fit in `budget` tokens (with `fixed` spent on the
    system prompt and tools), dropping the oldest first.

    The newest user message with text, and everything after it, is always kept,
    even past the budget. A tool call and its result are kept or dropped together,
    and the kept part never starts with an assistant message.
    """
    groups = _groups(messages)
    protected = _last_question(messages)
    total = fixed + sum(message_tokens(m) for m in messages)
    start = dropped = 0  # the groups before `start` are dropped

    def droppable() -> bool:
        if start >= len(groups):
            return False
        group_start, group = groups[start]
        return group_start + len(group) <= protected

    def drop() -> None:
        nonlocal start, dropped, total
        group = groups[start][1]
        total -= sum(message_tokens(m) for m in group)
        dropped += len(group)
        start += 1

    while total > budget and droppable():
        drop()
    # What is kept starts with the user: an answer without its question goes too.
    while dropped and droppable() and groups[start][1][0].role == "assistant":
        drop()
    kept = tuple(m for _, group in groups[start:] for m in group)
    return Trimmed(kept, dropped, total, budget)


def _groups(messages: Sequence[ChatMessage]) -> list[tuple[int, list[ChatMessage]]]:
    """The messages as droppable units, with the index each starts at: an assistant
    message that calls tools goes with the message after it, which holds the results."""
    groups: list[tuple[int, list[ChatMessage]]] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        calls = any(isinstance(b, ToolUseBlock) for b in message.blocks)
        size = 2 if message.role == "assistant" and calls and index + 1 < len(messages) else 1
        groups.append((index, list(messages[index : index + size])))
        index += size
    return groups


def _last_question(messages: Sequence[ChatMessage]) -> int:
    """The index of the newest user message with text (len(messages) if there is none)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.role == "user" and any(
            isinstance(b, TextBlock) and b.text for b in message.blocks
        ):
            return index
    return len(messages)
