"""A thread's events as AG-UI events (protocol 1.0): a pure translation, no I/O.

One AG-UI run is what one `POST /api/ag-ui` asks for: the answer to one user
message (the runs it started), or the rest of a run a resume answered. It opens
with RUN_STARTED and closes once every run of ours in it has settled:

- each run completed: RUN_FINISHED (`result`: a workflow's return value, `usage`
  per model from the runs' `model.usage`);
- any run waiting for a person: RUN_FINISHED with `outcome: {"type": "interrupt"}`,
  one interrupt per wait (a tool call to approve, or a workflow's signal);
- any run cancelled (and none waiting): RUN_FINISHED with `outcome: {"type":
  "cancelled"}`, the 1.0 outcome for a run stopped before it completed that did
  not fail;
- any run failed: RUN_ERROR with the run's reason, for a person to read.

Inside: `message.delta` → TEXT_MESSAGE_START (once) / TEXT_MESSAGE_CONTENT,
`message.completed` → TEXT_MESSAGE_END; `tool.called` → TOOL_CALL_START / ARGS /
END (the arguments whole, as compact JSON), `tool.result` → TOOL_CALL_RESULT;
`step.started` / `step.completed` (or `step.failed`) → STEP_STARTED /
STEP_FINISHED. The protocol forbids closing a run with a message or a step still
open, so whatever is open is closed first. A retried attempt's text cannot be
taken back from a client: it goes into a message of its own (`<id>.a<attempt>`).
Timers and retries are not a person's business: the run goes on streaming
through them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

AgUiEvent = dict[str, Any]

APPROVAL = "approval"
# Waits that end by themselves (a sleep, a retry's back-off): no interrupt.
NOT_A_PERSON = frozenset({"timer", "retry"})
SETTLED = frozenset({"run.completed", "run.failed", "run.cancelled"})


def interrupt_id(run_id: str, waiting_for: str, call_id: str | None) -> str:
    """`<run>/approval/<call>` for a tool call to approve, `<run>/<signal>` for a workflow's
    wait: a resume names the run and what answers it, with nothing to look up."""
    if waiting_for == APPROVAL and call_id:
        return f"{run_id}/{APPROVAL}/{call_id}"
    return f"{run_id}/{waiting_for}"


@dataclass(frozen=True)
class Wait:
    """What an interrupt id says: the run, the signal that answers it, and the call
    (for a tool call's approval)."""

    run_id: str
    signal: str
    call_id: str | None


def parse_interrupt_id(value: str) -> Wait | None:
    run_id, _, rest = value.partition("/")
    if not run_id or not rest:
        return None
    signal, _, call_id = rest.partition("/")
    if signal == APPROVAL and call_id:
        return Wait(run_id, APPROVAL, call_id)
    if not signal or call_id:
        return None
    return Wait(run_id, signal, None)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


@dataclass
class _Run:
    settled: str | None = None  # the settling event's type, or "run.waiting"
    reason: str = ""
    result: Any = None
    interrupts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Translation:
    """Feed it the thread's events in stream order (as the API shows them: dicts with
    `type`); it answers the AG-UI events each one makes. `done` once the run closed."""

    thread_id: str
    run_id: str  # the AG-UI run's id, as the client gave it
    runs: set[str]  # our runs this AG-UI run follows
    done: bool = False
    _state: dict[str, _Run] = field(default_factory=dict)
    _replies: dict[str, str] = field(default_factory=dict)  # run -> its reply message
    _open_text: dict[str, str] = field(default_factory=dict)  # our message id -> AG-UI id
    _attempt: dict[str, int] = field(default_factory=dict)  # our message id -> its attempt
    _written: dict[str, str] = field(default_factory=dict)  # our message id -> its open text
    _open_steps: dict[tuple[str, int, str], str] = field(default_factory=dict)
    _usage: dict[str, dict[str, int]] = field(default_factory=dict)

    def start(self) -> list[AgUiEvent]:
        return [{"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id}]

    def feed(self, event: dict[str, Any]) -> list[AgUiEvent]:
        if self.done or event.get("run_id") not in self.runs:
            return []
        run_id = str(event["run_id"])
        state = self._state.setdefault(run_id, _Run())
        out: list[AgUiEvent] = []
        match event.get("type"):
            case "run.requested":
                self._replies[run_id] = str(event["reply_id"])
            case "message.delta":
                out += self._delta(event)
            case "message.completed":
                out += self._completed(event)
            case "tool.called":
                out += self._tool_called(run_id, event)
            case "tool.result":
                out.append(
                    {
                        "type": "TOOL_CALL_RESULT",
                        "messageId": f"{event['call_id']}.result",
                        "toolCallId": event["call_id"],
                        "content": _text(event.get("result")),
                        "role": "tool",
                    }
                )
            case "step.started":
                out += self._step_started(run_id, event)
            case "step.completed" | "step.failed":
                key = (run_id, int(event.get("op", 0)), str(event["step"]))
                name = self._open_steps.pop(key, None)
                if name is not None:
                    out.append({"type": "STEP_FINISHED", "stepName": name})
            case "model.usage":
                self._count(event)
            case "run.waiting" if event.get("waiting_for") not in NOT_A_PERSON:
                state.settled = "run.waiting"
                state.interrupts.append(_interrupt(run_id, event))
            case "run.resumed" | "run.started" | "signal.received":
                state.settled, state.interrupts = None, []
            case "run.completed":
                state.settled, state.result = "run.completed", event.get("result")
            case "run.failed" | "run.cancelled":
                state.settled, state.reason = str(event["type"]), str(event.get("reason") or "")
        if all(self._state.get(r, _Run()).settled for r in self.runs):
            out += self._finish()
        return out

    def _delta(self, event: dict[str, Any]) -> list[AgUiEvent]:
        ours, attempt = str(event["message_id"]), int(event.get("attempt", 1))
        out: list[AgUiEvent] = []
        known = self._attempt.get(ours)
        if known is not None and attempt != known and ours in self._open_text:
            out.append({"type": "TEXT_MESSAGE_END", "messageId": self._open_text.pop(ours)})
        if ours not in self._open_text:
            shown = ours if attempt == 1 else f"{ours}.a{attempt}"
            self._open_text[ours], self._attempt[ours] = shown, attempt
            self._written[ours] = ""
            start: AgUiEvent = {"type": "TEXT_MESSAGE_START", "messageId": shown}
            start["role"] = "assistant"
            if event.get("agent"):
                start["name"] = event["agent"]
            out.append(start)
        if event.get("text"):
            self._written[ours] = self._written.get(ours, "") + str(event["text"])
            out.append(
                {
                    "type": "TEXT_MESSAGE_CONTENT",
                    "messageId": self._open_text[ours],
                    "delta": event["text"],
                }
            )
        return out

    def _completed(self, event: dict[str, Any]) -> list[AgUiEvent]:
        ours = str(event["message_id"])
        out: list[AgUiEvent] = []
        if ours not in self._open_text:
            if not event.get("text"):
                return []  # a turn of tool calls only: no text message
            # Completed with no deltas seen (written whole): the message in one piece.
            out += self._delta({"message_id": ours, "text": event["text"], "agent": None})
        else:
            # Its deltas may have been compacted away (projections/compaction.py): the
            # completion's text after what was streamed is what they held.
            full, written = str(event.get("text") or ""), self._written.get(ours, "")
            if len(full) > len(written) and full.startswith(written):
                out.append(
                    {
                        "type": "TEXT_MESSAGE_CONTENT",
                        "messageId": self._open_text[ours],
                        "delta": full[len(written) :],
                    }
                )
        self._written.pop(ours, None)
        out.append({"type": "TEXT_MESSAGE_END", "messageId": self._open_text.pop(ours)})
        return out

    def _tool_called(self, run_id: str, event: dict[str, Any]) -> list[AgUiEvent]:
        call_id = str(event["call_id"])
        start: AgUiEvent = {
            "type": "TOOL_CALL_START",
            "toolCallId": call_id,
            "toolCallName": event["tool"],
        }
        if run_id in self._replies:
            start["parentMessageId"] = self._replies[run_id]
        args = event.get("args")
        return [
            start,
            {
                "type": "TOOL_CALL_ARGS",
                "toolCallId": call_id,
                "delta": orjson.dumps({} if args is None else args).decode(),
            },
            {"type": "TOOL_CALL_END", "toolCallId": call_id},
        ]

    def _step_started(self, run_id: str, event: dict[str, Any]) -> list[AgUiEvent]:
        key = (run_id, int(event.get("op", 0)), str(event["step"]))
        if key in self._open_steps:
            return []  # a retried attempt of a step still open here
        name = key[2]
        if name in self._open_steps.values():  # two open at once: the protocol needs two names
            name = f"{name}#{key[1]}"
        self._open_steps[key] = name
        return [{"type": "STEP_STARTED", "stepName": name}]

    def _count(self, event: dict[str, Any]) -> None:
        kept = self._usage.setdefault(
            str(event.get("model", "")),
            {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0},
        )
        kept["input"] += int(event.get("input_tokens", 0))
        kept["output"] += int(event.get("output_tokens", 0))
        kept["cache_read"] += int(event.get("cache_read_tokens", 0))
        kept["cache_write"] += int(event.get("cache_write_tokens", 0))

    def _finish(self) -> list[AgUiEvent]:
        self.done = True
        out: list[AgUiEvent] = [
            {"type": "TEXT_MESSAGE_END", "messageId": shown} for shown in self._open_text.values()
        ]
        out += [{"type": "STEP_FINISHED", "stepName": name} for name in self._open_steps.values()]
        self._open_text.clear()
        self._open_steps.clear()
        states = [self._state[r] for r in sorted(self.runs)]
        failed = [s for s in states if s.settled == "run.failed"]
        if failed:
            reason = failed[0].reason or "the run failed"
            out.append({"type": "RUN_ERROR", "message": reason, "code": "run_failed"})
            return out
        finished: AgUiEvent = {
            "type": "RUN_FINISHED",
            "threadId": self.thread_id,
            "runId": self.run_id,
        }
        interrupts = [i for s in states for i in s.interrupts]
        if interrupts:
            finished["outcome"] = {"type": "interrupt", "interrupts": interrupts}
        elif any(s.settled == "run.cancelled" for s in states):
            finished["outcome"] = {"type": "cancelled"}
        else:
            finished["outcome"] = {"type": "success"}
            results = [s.result for s in states if s.result is not None]
            if results:
                finished["result"] = results[0] if len(results) == 1 else results
        if self._usage:
            finished["usage"] = [_usage(model, kept) for model, kept in self._usage.items()]
        out.append(finished)
        return out


def _interrupt(run_id: str, event: dict[str, Any]) -> dict[str, Any]:
    waiting_for = str(event["waiting_for"])
    call_id = event.get("call_id")
    found: dict[str, Any] = {"id": interrupt_id(run_id, waiting_for, call_id)}
    if waiting_for == APPROVAL and call_id:
        found["reason"] = "tool_approval"
        found["message"] = f"May {event.get('tool')} run with these arguments?"
        found["toolCallId"] = call_id
        found["responseSchema"] = {
            "type": "object",
            "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}},
            "required": ["approved"],
        }
        found["metadata"] = {"tool": event.get("tool"), "args": event.get("args")}
    else:
        found["reason"] = "signal"
        found["message"] = f"The workflow waits for the signal {waiting_for!r}"
        found["metadata"] = {"signal": waiting_for}
    return found


def _usage(model: str, kept: dict[str, int]) -> dict[str, Any]:
    # AG-UI counts cache reads and writes as parts of inputTokens; ours are beside it.
    prompt = kept["input"] + kept["cache_read"] + kept["cache_write"]
    return {
        "model": model,
        "inputTokens": prompt,
        "outputTokens": kept["output"],
        "totalTokens": prompt + kept["output"],
        "cachedInputTokens": kept["cache_read"],
        "cacheWriteInputTokens": kept["cache_write"],
    }
