"""A thread's events as the Vercel AI SDK's UI message stream (protocol v1): a pure
translation, no I/O, so it is tested on plain event lists like the thread view's fold.

One stream is one answer: the runs one user message started (one per agent it asked),
read from their first event. What it sends, and why:

- `start` (the reply's message id: the first run's assistant message, as the thread
  view names it; metadata: the thread and its runs), then `start-step`.
- Each assistant message of the runs is text parts: `text-start` / `text-delta` /
  `text-end`, the first with the message's id, later ones (text after a tool call or a
  new attempt) `<message id>:<n>`; joined they are the message's `message.completed`
  text. A message written by another agent (a hand-off, a workflow's turn, a second
  agent answering at once) says who in `providerMetadata.slipstream.agent`.
- `tool.called` → `tool-input-available`, `tool.result` → `tool-output-available`
  or `tool-output-error`; the tools are ours, not the client's: `dynamic: true`.
- `run.waiting` for an approval → `tool-approval-request` (approval id = the call id);
  the route then ends the stream as the SDK expects (`finish-step`, `finish` with
  `finishReason: "tool-calls"`) while the run waits; a person's no is
  `tool-output-denied`.
- A new model turn (after tool results, or a hand-off) is a new step
  (`finish-step` + `start-step`), taken only while no text part is open: `finish-step`
  forgets the open text parts, and several agents answering at once share the stream.
- A new attempt of a run (its worker died, or the model failed mid-answer) writes its
  text again: the earlier attempt's part is ended and the new text is a new part.
  The SDK cannot take text back, so a client sees both; the thread view keeps the last.
- The end, once every run has ended: a failure → `error` (the run's reason, meant for
  people), a cancel → `abort`, else `finish-step` and `finish` with the usage of all
  the runs' model calls in `messageMetadata.usage`; then `data: [DONE]`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

Chunk = dict[str, Any]
HEADERS = {
    "x-vercel-ai-ui-message-stream": "v1",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # proxies (nginx) would hold the stream back otherwise
}
MEDIA_TYPE = "text/event-stream"
DONE = b"data: [DONE]\n\n"
HEARTBEAT = b": ping\n\n"  # an SSE comment: parsers skip it, proxies see bytes flowing
ENDED = ("run.completed", "run.failed", "run.cancelled")


def sse(chunk: Chunk) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


@dataclass
class _Text:
    """Where one assistant message's text stands in the stream."""

    parts: int = 0  # text parts opened so far
    open_id: str | None = None
    attempt: int = 0
    streamed: bool = False
    written: str = ""  # the text its current attempt streamed so far


@dataclass
class _Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def as_metadata(self) -> dict[str, int]:
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "totalTokens": self.input_tokens + self.output_tokens,
            "cacheReadTokens": self.cache_read_tokens,
            "cacheWriteTokens": self.cache_write_tokens,
        }


@dataclass
class Answer:
    """The translation of one answer's events into UI message chunks.

    `runs` maps each run of the answer to its agent; `message_id` is the reply's id
    (the `start` chunk's). `continuing`: the client already has the message (an
    approval's answer goes on with it): no metadata in `start`, and its parts go on.
    """

    thread_id: str
    message_id: str
    runs: Mapping[str, str]
    continuing: bool = False
    done: bool = False
    waiting_call: str | None = field(default=None, init=False)
    _texts: dict[str, _Text] = field(default_factory=dict, init=False)
    _ended: dict[str, tuple[str, str]] = field(default_factory=dict, init=False)
    _usage: _Usage = field(default_factory=_Usage, init=False)
    _new_step: bool = field(default=False, init=False)
    _denied: set[str] = field(default_factory=set, init=False)
    _owner: dict[str, str] = field(default_factory=dict, init=False)  # message → its run

    def opening(self) -> list[Chunk]:
        start: Chunk = {"type": "start", "messageId": self.message_id}
        if not self.continuing:
            start["messageMetadata"] = {"threadId": self.thread_id, "runs": self._runs()}
        return [start, {"type": "start-step"}]

    def apply(self, event: Mapping[str, Any]) -> list[Chunk]:
        """The chunks one event of the thread makes (none for another run's)."""
        run_id = event.get("run_id")
        if self.done or run_id not in self.runs:
            return []
        kind = event["type"]
        handler = _HANDLERS.get(kind)
        return handler(self, str(run_id), event) if handler is not None else []

    def paused(self) -> list[Chunk]:
        """The end of a stream whose run waits for a person's approval."""
        self.done = True
        return [*self._close_texts(), {"type": "finish-step"}, self._finish("tool-calls")]

    def _runs(self) -> list[dict[str, str]]:
        return [{"runId": run_id, "agent": agent} for run_id, agent in self.runs.items()]

    def _finish(self, reason: str) -> Chunk:
        return {
            "type": "finish",
            "finishReason": reason,
            "messageMetadata": {
                "threadId": self.thread_id,
                "runs": [
                    {**run, "status": self._ended.get(run["runId"], ("running", ""))[0]}
                    for run in self._runs()
                ],
                "usage": self._usage.as_metadata(),
            },
        }

    def _open_ids(self) -> list[str]:
        return [t.open_id for t in self._texts.values() if t.open_id is not None]

    def _close_texts(self, messages: Iterable[str] | None = None) -> list[Chunk]:
        chunks: list[Chunk] = []
        for message_id, text in self._texts.items():
            if text.open_id is not None and (messages is None or message_id in messages):
                chunks.append({"type": "text-end", "id": text.open_id})
                text.open_id = None
        return chunks

    def _step(self) -> list[Chunk]:
        """A new step before new content, when one is due and no text part is open."""
        if not self._new_step or self._open_ids():
            return []
        self._new_step = False
        return [{"type": "finish-step"}, {"type": "start-step"}]

    def _of_run(self, run_id: str) -> list[str]:
        """The messages `run_id` writes in."""
        return [m for m, r in self._owner.items() if r == run_id]

    def _text_chunks(
        self, run_id: str, message_id: str, attempt: int, agent: str | None
    ) -> tuple[_Text, list[Chunk]]:
        """The message's open text part, opened (with a step before it) when needed."""
        text = self._texts.setdefault(message_id, _Text(attempt=attempt))
        self._owner.setdefault(message_id, run_id)
        chunks: list[Chunk] = []
        if attempt > text.attempt:  # a new attempt writes the text again: a new part
            chunks += self._close_texts([message_id])
            text.attempt, text.written = attempt, ""
            self._new_step = True
        if text.open_id is None:
            chunks += self._step()
            part_id = message_id if text.parts == 0 else f"{message_id}:{text.parts}"
            text.parts += 1
            text.open_id = part_id
            start: Chunk = {"type": "text-start", "id": part_id}
            writer = agent or self.runs[run_id]
            if message_id != self.message_id or len(self.runs) > 1 or writer != self.runs[run_id]:
                start["providerMetadata"] = {
                    "slipstream": {"agent": writer, "messageId": message_id}
                }
            chunks.append(start)
        return text, chunks


def _delta(answer: Answer, run_id: str, event: Mapping[str, Any]) -> list[Chunk]:
    message_id = str(event["message_id"])
    known = answer._texts.get(message_id)
    if known is not None and int(event.get("attempt", 1)) < known.attempt:
        return []  # a late delta of an attempt already replaced
    text, chunks = answer._text_chunks(
        run_id, message_id, int(event.get("attempt", 1)), event.get("agent")
    )
    text.streamed = True
    text.written += str(event["text"])
    assert text.open_id is not None
    return [*chunks, {"type": "text-delta", "id": text.open_id, "delta": str(event["text"])}]


def _completed(answer: Answer, run_id: str, event: Mapping[str, Any]) -> list[Chunk]:
    message_id = str(event["message_id"])
    text = answer._texts.get(message_id)
    if text is not None and text.streamed:
        # Its deltas may have been compacted away (projections/compaction.py): what they
        # held is the completion's text after what was streamed, sent before the end.
        full = str(event.get("text") or "")
        if len(full) <= len(text.written) or not full.startswith(text.written):
            return answer._close_texts([message_id])
        rest = full[len(text.written) :]
        text, chunks = answer._text_chunks(run_id, message_id, text.attempt, None)
        text.written = full
        assert text.open_id is not None
        chunks.append({"type": "text-delta", "id": text.open_id, "delta": rest})
        return [*chunks, *answer._close_texts([message_id])]
    # Written whole, never streamed (a workflow's journaled answer): one part.
    if not event.get("text"):
        return []
    text, chunks = answer._text_chunks(run_id, message_id, 0, event.get("agent"))
    text.streamed = True
    assert text.open_id is not None
    chunks.append({"type": "text-delta", "id": text.open_id, "delta": str(event["text"])})
    return [*chunks, *answer._close_texts([message_id])]


def _tool_called(answer: Answer, run_id: str, event: Mapping[str, Any]) -> list[Chunk]:
    # Text after the call is a part of its own, below the call, as the model wrote it.
    chunks = answer._close_texts(answer._of_run(run_id))
    chunks += answer._step()
    chunks.append(
        {
            "type": "tool-input-available",
            "toolCallId": str(event["call_id"]),
            "toolName": str(event["tool"]),
            "input": event.get("args"),
            "dynamic": True,
        }
    )
    return chunks


def _tool_result(answer: Answer, run_id: str, event: Mapping[str, Any]) -> list[Chunk]:
    call_id = str(event["call_id"])
    if call_id in answer._denied:
        return []  # said already: tool-output-denied
    answer._new_step = True  # the model reads the result in a turn of its own
    result = event.get("result")
    if event.get("is_error"):
        text = result if isinstance(result, str) else orjson.dumps(result).decode()
        return [
            {"type": "tool-output-error", "toolCallId": call_id, "errorText": text, "dynamic": True}
        ]
    return [
        {"type": "tool-output-available", "toolCallId": call_id, "output": result, "dynamic": True}
    ]


def _waiting(answer: Answer, run_id: str, event: Mapping[str, Any]) -> list[Chunk]:
    call_id = event.get("call_id")
    if event.get("waiting_for") != "approval" or not call_id:
        return []  # a workflow's timer or signal: the stream stays open, the run goes on
    answer.waiting_call = str(call_id)
    return [
        {"type": "tool-approval-request", "approvalId": str(call_id), "toolCallId": str(call_id)}
    ]


def _signal(answer: Answer, run_id: str, event: Mapping[str, Any]) -> list[Chunk]:
    payload = event.get("payload")
    if event.get("name") != "approval" or not isinstance(payload, dict):
        return []
    answer.waiting_call = None
    call_id = payload.get("call_id")
    if payload.get("approved") is False and isinstance(call_id, str):
        answer._denied.add(call_id)
        answer._new_step = True  # the model reads the no in a turn of its own
        return [{"type": "tool-output-denied", "toolCallId": call_id}]
    return []


def _resumed(answer: Answer, run_id: str, event: Mapping[str, Any]) -> list[Chunk]:
    answer.waiting_call = None
    return []


def _handoff(answer: Answer, run_id: str, event: Mapping[str, Any]) -> list[Chunk]:
    answer._new_step = True  # the agent handed to answers in a message (and step) of its own
    return answer._close_texts(answer._of_run(run_id))


def _usage(answer: Answer, run_id: str, event: Mapping[str, Any]) -> list[Chunk]:
    usage = answer._usage
    usage.input_tokens += int(event.get("input_tokens", 0))
    usage.output_tokens += int(event.get("output_tokens", 0))
    usage.cache_read_tokens += int(event.get("cache_read_tokens", 0))
    usage.cache_write_tokens += int(event.get("cache_write_tokens", 0))
    return []


def _run_ended(answer: Answer, run_id: str, event: Mapping[str, Any]) -> list[Chunk]:
    status = {"run.completed": "completed", "run.failed": "failed", "run.cancelled": "cancelled"}
    answer._ended[run_id] = (status[event["type"]], str(event.get("reason") or ""))
    chunks = answer._close_texts(answer._of_run(run_id))
    if len(answer._ended) < len(answer.runs):
        return chunks
    answer.done = True
    chunks += answer._close_texts()
    outcomes = [answer._ended[r] for r in answer.runs]
    failed = [reason for outcome, reason in outcomes if outcome == "failed"]
    cancelled = [reason for outcome, reason in outcomes if outcome == "cancelled"]
    if failed:
        return [
            *chunks,
            {"type": "finish-step"},
            {"type": "error", "errorText": failed[0] or "the answer failed"},
            answer._finish("error"),
        ]
    if cancelled:
        return [
            *chunks,
            {"type": "finish-step"},
            {"type": "abort", "reason": cancelled[0] or "cancelled"},
        ]
    return [*chunks, {"type": "finish-step"}, answer._finish("stop")]


_HANDLERS = {
    "message.delta": _delta,
    "message.completed": _completed,
    "tool.called": _tool_called,
    "tool.result": _tool_result,
    "run.waiting": _waiting,
    "signal.received": _signal,
    "run.resumed": _resumed,
    "agent.handoff": _handoff,
    "model.usage": _usage,
    "run.completed": _run_ended,
    "run.failed": _run_ended,
    "run.cancelled": _run_ended,
}


def translate(answer: Answer, events: Sequence[Mapping[str, Any]]) -> list[Chunk]:
    """Every chunk of `events` (for tests and replays): the opening, then each event's."""
    chunks = answer.opening()
    for event in events:
        chunks += answer.apply(event)
    return chunks
