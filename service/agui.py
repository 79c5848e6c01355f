"""`POST /api/ag-ui`: AG-UI's HTTP transport (protocol 1.0) over a thread.

The body is AG-UI's `RunAgentInput`; the answer is `text/event-stream`, one AG-UI
event per `data:` line, translated from the thread's own events by
service/agui_events.py (the thread stays the one source of truth: what the
client sees is what the websocket shows).

- `threadId` is the thread (created on first use, the caller its owner);
  `runId` names the AG-UI run in RUN_STARTED / RUN_FINISHED.
- Only the last message is read, and it must be the user's: it is appended with
  its AG-UI id as the client id, so a resend writes nothing and streams the
  first send's answer again. The rest of `messages` is the client's copy of the
  thread, which has its own. `tools`, `context` and `state` are accepted and not
  used: the agents have their own tools (agents.toml).
- `forwardedProps.agent` picks the agent (or workflow); without it the router
  decides as for any message.
- A run that waits for a person ends the AG-UI run with an `interrupt` outcome.
  The client resumes with AG-UI 1.0's own shape: a new input whose `resume`
  holds `{interruptId, status, payload}` per interrupt. For a tool call,
  `status: "resolved"` with `payload: {approved, reason?}` sends the `approval`
  signal; `status: "cancelled"` declines the call. For a workflow's wait the
  payload is the signal's payload; `cancelled` cancels the run. The answer
  streams the rest of the run. A resume appends no message.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from consumers.agents import known_agents
from service import access, api, commands
from service.agui_events import Translation, parse_interrupt_id
from service.follow import follow
from service.models import MAX_AGENTS_PER_MESSAGE, MAX_MESSAGE_BYTES, NewMessage
from service.runtime import Runtime
from service.session import caller
from service.stream_gate import StreamGate
from slipstream import errors, events
from slipstream.keys import stream_id_tuple

router = APIRouter(dependencies=api.router.dependencies, responses={401: {}, 403: {}})

CLIENT_ID = r"^[A-Za-z0-9_.:-]{1,64}$"


class _Input(BaseModel):
    # Open: AG-UI clients send fields of their own version (protocolVersion,
    # parentRunId, ...) that this server need not read.
    model_config = ConfigDict(extra="allow")


class AgUiMessage(_Input):
    id: str = Field(min_length=1, max_length=200)
    role: str
    content: Any = None


class ResumeEntry(_Input):
    interruptId: str = Field(min_length=1, max_length=200)  # AG-UI's names
    status: Literal["resolved", "cancelled"]
    payload: JsonValue = None


class RunAgentInput(_Input):
    threadId: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    runId: str = Field(min_length=1, max_length=200)
    messages: list[AgUiMessage] = Field(default_factory=list, max_length=10_000)
    tools: list[JsonValue] = Field(default_factory=list)
    context: list[JsonValue] = Field(default_factory=list)
    state: JsonValue = None
    forwardedProps: JsonValue = None
    resume: list[ResumeEntry] | None = Field(None, max_length=MAX_AGENTS_PER_MESSAGE)


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def _text_of(content: Any) -> str:
    """A user message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if parts and all(isinstance(p, str) for p in parts):
            return "\n".join(str(p) for p in parts)
    raise _unprocessable("messages[-1].content: expected text (a string or text parts)")


def _agent(body: RunAgentInput) -> str | None:
    props = body.forwardedProps
    if props is None:
        return None
    if not isinstance(props, dict):
        raise _unprocessable("forwardedProps: expected an object")
    agent = props.get("agent")
    if agent is None:
        return None
    if not isinstance(agent, str) or agent not in known_agents():
        raise _unprocessable(
            f"forwardedProps.agent: no agent named {agent!r}; known: {', '.join(known_agents())}"
        )
    return agent


# Not in the OpenAPI document: its body and events are AG-UI's own (the protocol
# publishes their schema), and its answer lasts as long as the run it streams.
@router.post("/api/ag-ui", response_class=StreamingResponse, include_in_schema=False)
async def run_agent(request: Request, body: RunAgentInput) -> StreamingResponse:
    """Run an agent on a thread the AG-UI way: the answer as AG-UI events (SSE)."""
    rt = api.runtime(request)
    if body.resume:
        translation, after = await _resume(request, rt, body)
    else:
        translation, after = await _send(request, rt, body)
    return StreamingResponse(
        _stream(request, rt, body.threadId, translation, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _send(request: Request, rt: Runtime, body: RunAgentInput) -> tuple[Translation, str]:
    """Append the last (user) message and its runs; where its answer starts."""
    if not body.messages or body.messages[-1].role != "user":
        raise _unprocessable("messages: the last message must be the user's new message")
    last = body.messages[-1]
    text = _text_of(last.content)
    if not text.strip():
        raise _unprocessable("messages[-1].content: must not be empty")
    size = len(text.encode())
    if size > MAX_MESSAGE_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the message is {size} bytes; a message may have at most {MAX_MESSAGE_BYTES}",
        )
    if not re.match(CLIENT_ID, last.id):
        raise _unprocessable(
            f"messages[-1].id: {last.id[:80]!r} must be 1-64 of A-Z a-z 0-9 _ . : - "
            "(it is the message's client id)"
        )
    agent = _agent(body)
    who = caller(request)
    exists = await rt.store.exists(body.threadId)
    if exists:
        await access.authorize(rt, who, body.threadId)
    await api._may_start_runs(request, send=True)
    if not exists:
        with contextlib.suppress(errors.ThreadExists):  # made meanwhile: whose is checked below
            await commands.create_thread_with_id(rt.store, body.threadId, "", owner=who.user)
        await access.authorize(rt, who, body.threadId)
    if agent is None:  # a resend is answered before routing, as the HTTP API does
        before = await commands.earlier_send(rt.store, body.threadId, last.id)
        if before is not None:
            return _following(body, before), before.event_id
    message = NewMessage(content=text, agent=agent, client_id=last.id)  # checked above
    sent = await api.send_routed(rt, who.user, body.threadId, message)
    return _following(body, sent), sent.event_id


def _following(body: RunAgentInput, sent: commands.Sent) -> Translation:
    runs = {r.run_id for r in sent.runs} or {sent.run_id}
    return Translation(body.threadId, body.runId, runs)


async def _resume(request: Request, rt: Runtime, body: RunAgentInput) -> tuple[Translation, str]:
    """Answer the interrupts `resume` names; where the rest of their runs starts."""
    assert body.resume is not None
    waits = []
    for n, entry in enumerate(body.resume):
        wait = parse_interrupt_id(entry.interruptId)
        if wait is None or wait.run_id.rpartition(".")[0] != body.threadId:
            raise _unprocessable(
                f"resume[{n}].interruptId: {entry.interruptId[:80]!r} is no interrupt of "
                f"thread {body.threadId!r}"
            )
        if entry.status == "resolved" and wait.call_id is not None:
            payload = entry.payload
            if not (isinstance(payload, dict) and isinstance(payload.get("approved"), bool)):
                raise _unprocessable(f"resume[{n}].payload: expected {{approved: bool, reason?}}")
        waits.append((wait, entry))
    who = caller(request)
    await access.authorize(rt, who, body.threadId)
    # Where each run stopped to wait: the rest of the run follows it (found again for
    # a resend of this resume, whose signal is already in).
    stored = await rt.store.read(body.threadId)
    after: str | None = None
    for wait, entry in waits:
        waited = [
            s.id
            for s in stored
            if isinstance(s.event, events.RunWaiting)
            and s.event.run_id == wait.run_id
            and s.event.waiting_for == wait.signal
            and (wait.call_id is None or s.event.call_id == wait.call_id)
        ]
        if not waited:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no interrupt {entry.interruptId!r} in this thread"
            )
        if after is None or stream_id_tuple(waited[-1]) < stream_id_tuple(after):
            after = waited[-1]
        await _answer(rt, wait.run_id, wait.signal, wait.call_id, entry, body.runId)
    assert after is not None
    return Translation(body.threadId, body.runId, {w.run_id for w, _ in waits}), after


async def _answer(
    rt: Runtime, run_id: str, signal: str, call_id: str | None, entry: ResumeEntry, sender: str
) -> None:
    """Send the answer; one already given (a resent resume) is no error: its run goes on."""
    try:
        if entry.status == "cancelled" and call_id is None:
            await commands.cancel_run(rt.store, run_id, reason="cancelled by a user")
            return
        if call_id is not None:
            given = entry.payload if isinstance(entry.payload, dict) else {}
            answer: dict[str, JsonValue] = {
                "call_id": call_id,
                "approved": entry.status == "resolved" and bool(given.get("approved")),
            }
            if isinstance(given.get("reason"), str):
                answer["reason"] = given["reason"]
            elif entry.status == "cancelled":
                answer["reason"] = "cancelled by a user"
            payload: JsonValue = answer
        else:
            payload = entry.payload
        await commands.signal_run(rt.store, run_id, signal, payload, f"ag-ui:{sender}"[:64])
    except (errors.SignalUnawaited, errors.RunFinished, errors.RunCancelled):
        pass


async def _stream(
    request: Request, rt: Runtime, thread_id: str, translation: Translation, after: str
) -> AsyncIterator[bytes]:
    gate = StreamGate(rt, request, thread_id)
    for out in translation.start():
        yield _data(out)
    async with contextlib.aclosing(
        follow(rt, thread_id, after, idle_s=rt.settings.heartbeat_s, still_open=gate.still_open)
    ) as followed:
        async for item in followed:
            if item is None:
                yield b": ping\n\n"
                continue
            for out in translation.feed(item.event):
                yield _data(out)
            if translation.done:
                return
    if not translation.done:
        message = gate.refusal or "the stream stopped"
        yield _data({"type": "RUN_ERROR", "message": message, "code": "stream_closed"})


def _data(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"
