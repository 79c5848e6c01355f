"""`/api/chat`: the Vercel AI SDK's chat endpoints (`useChat` with `DefaultChatTransport`).

- `POST /api/chat` sends the new last user message of `messages` to the thread `id`
  (created on first use, the caller its owner) and streams the answer as a UI message
  stream (service/ui_message_stream.py). The UI message's id is the message's client
  id: a resend writes nothing and streams the same answer again. Only that last
  message is read: the thread holds the history, so a client may send it alone
  (`prepareSendMessagesRequest`), which keeps long chats under the body limit.
  `trigger: "regenerate-message"` answers the last user message again; a last
  assistant message whose tool parts answer approvals (`addToolApprovalResponse`)
  delivers them and streams the rest of the answer. `agent` / `agents` in the body
  choose who answers, as on `POST /api/threads/{id}/messages`.
- `GET /api/chat/{id}/stream` streams the thread's active answer from its first part,
  then live (`resumeStream()`); 204 when nothing is running.
- `POST /api/chat/{id}/stop` cancels the thread's active runs (the SDK's `stop()` only
  closes its fetch; closing a stream never stops a run).

Every stream is read from the thread's events (service/follow.py), so it survives the
web process: a client cut off resumes with the same text.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from projections.thread_view import RunView, ThreadView
from service import access, api, commands
from service.follow import follow
from service.models import MAX_MESSAGE_BYTES, NewMessage
from service.runtime import Runtime
from service.session import authenticated, caller
from service.stream_gate import StreamGate
from service.ui_message_stream import DONE, HEADERS, HEARTBEAT, MEDIA_TYPE, Answer, sse
from slipstream import errors
from slipstream import events as ev

router = APIRouter(dependencies=[Depends(authenticated)], responses={401: {}, 403: {}})

CHAT_ID = r"^[A-Za-z0-9_-]{1,64}$"
CLIENT_ID = r"^[A-Za-z0-9_.:-]{1,64}$"
ACTIVE = ("queued", "running", "retrying", "waiting")
MAX_SEQ = 2**64 - 1
ChatId = Annotated[str, Path(pattern=CHAT_ID, description="the chat: the thread's id")]


class UIMessageIn(BaseModel):
    """A UI message as `useChat` keeps it; only the last one is read."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(max_length=200)
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, JsonValue]] = Field(default_factory=list, max_length=1000)


class ChatRequest(BaseModel):
    """What `DefaultChatTransport` posts; fields of the transport's `body` come along."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(pattern=CHAT_ID, description="the chat id: the thread's (created on first use)")
    messages: list[UIMessageIn] = Field(min_length=1)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = Field(None, max_length=200)  # the SDK's name
    agent: str | None = None
    agents: list[str] | None = None


class Stopped(BaseModel):
    thread_id: str
    cancelled: list[str] = Field(description="the runs a cancel was sent to")


def _runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


# The streaming routes are not in /openapi.json: their shapes are the AI SDK's.
@router.post(
    "/api/chat",
    include_in_schema=False,
    response_class=StreamingResponse,
    responses={
        200: {"content": {MEDIA_TYPE: {}}, "description": "the answer, as a UI message stream"},
        404: {},
        409: {},
        413: {},
        422: {},
        429: {},
    },
)
async def chat(request: Request, body: ChatRequest) -> StreamingResponse:
    rt = _runtime(request)
    if body.trigger == "regenerate-message":
        return await _regenerate(request, rt, body)
    last = body.messages[-1]
    answered = [p for p in last.parts if p.get("state") == "approval-responded"]
    if last.role == "assistant" and answered:
        return await _approve(request, rt, body.id, last.id, answered)
    if last.role != "user":
        raise _unprocessable(
            "messages: the last message must be the user's new message (or an assistant "
            f"message answering tool approvals), not a {last.role} message"
        )
    return await _send(request, rt, body, last)


def _text_of(message: UIMessageIn) -> str:
    texts = [p.get("text") for p in message.parts if p.get("type") == "text"]
    return "\n\n".join(t for t in texts if isinstance(t, str))


def _new_message(body: ChatRequest, last: UIMessageIn) -> NewMessage:
    """The message as `POST /api/threads/{id}/messages` takes it, checked the same way."""
    content = _text_of(last)
    size = len(content.encode())
    if size > MAX_MESSAGE_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the message is {size} bytes; a message may have at most {MAX_MESSAGE_BYTES}",
        )
    if not content.strip():
        raise _unprocessable("messages: the last user message has no text part")
    try:
        return NewMessage(content=content, agent=body.agent, agents=body.agents, client_id=last.id)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"])
            where = "messages[-1].id" if where == "client_id" else where
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise _unprocessable("; ".join(problems)) from None


async def _send(
    request: Request, rt: Runtime, body: ChatRequest, last: UIMessageIn
) -> StreamingResponse:
    message = _new_message(body, last)
    who = caller(request)
    exists = await rt.store.exists(body.id)
    if exists:
        await access.authorize(rt, who, body.id)
        assert message.client_id is not None
        before = await commands.earlier_send(rt.store, body.id, message.client_id)
        if before is not None:  # a resend: the same answer again, nothing written
            return await _answer_stream(request, rt, before)
    await api._may_start_runs(request, send=True)  # 429 before anything is written
    if not exists:
        try:
            await commands.create_thread_with_id(rt.store, body.id, "", owner=who.user)
        except errors.ThreadExists:  # created meanwhile (a twin request): theirs or ours
            await access.authorize(rt, who, body.id)
    sent = await api.send_routed(rt, who.user, body.id, message)
    return await _answer_stream(request, rt, sent)


async def _answer_stream(request: Request, rt: Runtime, sent: commands.Sent) -> StreamingResponse:
    runs = {r.run_id: r.agent for r in sent.runs}
    reply_id = sent.runs[0].reply_id if sent.runs else ""
    if not reply_id or not runs:  # an old send's events named less: the view knows
        view = await rt.views.current(sent.thread_id)
        found = [r for r in view.runs.values() if r.message_id == sent.message_id]
        runs = runs or {r.id: r.agent for r in found}
        reply_id = next((r.reply_id for r in found if r.id in runs), reply_id)
    answer = Answer(sent.thread_id, reply_id, runs)
    return _streaming(request, rt, answer, after=sent.event_id)


def _streaming(request: Request, rt: Runtime, answer: Answer, *, after: str) -> StreamingResponse:
    return StreamingResponse(
        _chunks(request, rt, answer, after), media_type=MEDIA_TYPE, headers=HEADERS
    )


async def _regenerate(request: Request, rt: Runtime, body: ChatRequest) -> StreamingResponse:
    await access.authorize(rt, caller(request), body.id)
    view = await api.existing_view(rt, body.id)
    run = _answered_run(view, body.messageId)
    await api._may_start_runs(request)
    new_run, reply_id = await commands.regenerate(rt.store, rt.views, run.id)
    await rt.limits.add_runs(caller(request).user, [new_run])
    answer = Answer(body.id, reply_id, {new_run: run.agent})
    # The new run's events all come after what the view has read.
    return _streaming(request, rt, answer, after=view.last_event_id or "0-0")


def _answered_run(view: ThreadView, message_id: str | None) -> RunView:
    """The run whose answer `message_id` names (an assistant message); else the newest."""
    replies = [m for m in view.messages if m.role == "assistant" and m.run_id in view.runs]
    if message_id is not None:
        replies = [m for m in replies if m.id == message_id]
    if not replies or replies[-1].run_id is None:
        raise _unprocessable(
            f"messageId: {message_id!r} is not an answer of this chat"
            if message_id
            else "this chat has no answer to regenerate"
        )
    return view.runs[replies[-1].run_id]


async def _approve(
    request: Request, rt: Runtime, thread_id: str, message_id: str, parts: list[dict[str, Any]]
) -> StreamingResponse:
    """Deliver the approvals the message's tool parts answer; stream the rest of the answer."""
    await access.authorize(rt, caller(request), thread_id)
    view = await api.existing_view(rt, thread_id)
    reply = view.message(message_id)
    run = view.runs.get(reply.run_id or "") if reply is not None else None
    if run is None:
        raise _unprocessable(f"messages: {message_id!r} is not an answer of this chat")
    calls: list[str] = []
    for part in parts:
        approval, call_id = part.get("approval"), part.get("toolCallId")
        if not isinstance(approval, dict) or not isinstance(call_id, str):
            raise _unprocessable(
                "messages: an approval-responded part needs toolCallId and approval"
            )
        payload: dict[str, JsonValue] = {"call_id": call_id, "approved": approval.get("approved")}
        if isinstance(approval.get("reason"), str):
            payload["reason"] = approval["reason"]
        # The approval's own id makes a resend a no-op (it answers what the first did).
        await commands.signal_run(
            rt.store, run.id, "approval", payload, f"ai-sdk:{approval.get('id', call_id)}"[:64]
        )
        calls.append(call_id)
    after = await _waited_at(rt, thread_id, run, calls)
    answer = Answer(thread_id, run.reply_id, {run.id: run.agent}, continuing=True)
    return _streaming(request, rt, answer, after=after)


def _run_start(run: RunView) -> str:
    """A position just before the run's first event (it was requested at `requested_at`)."""
    return f"{run.requested_at - 1}-{MAX_SEQ}" if run.requested_at > 0 else "0-0"


async def _waited_at(rt: Runtime, thread_id: str, run: RunView, calls: list[str]) -> str:
    """The id of the run's wait for the first of `calls`: the rest of the answer follows it."""
    found = _run_start(run)
    for stored in await rt.store.read(thread_id, after=found):
        event = stored.event
        if isinstance(event, ev.RunWaiting) and event.run_id == run.id and event.call_id in calls:
            return stored.id
    return found


@router.get(
    "/api/chat/{chat_id}/stream",
    include_in_schema=False,
    response_class=StreamingResponse,
    responses={
        200: {"content": {MEDIA_TYPE: {}}, "description": "the active answer, from its start"},
        204: {"description": "nothing is running"},
        404: {},
        422: {},
    },
)
async def resume(request: Request, chat_id: ChatId) -> Response:
    rt = _runtime(request)
    await access.authorize(rt, caller(request), chat_id)
    view = await api.existing_view(rt, chat_id)
    active = [r for r in view.runs.values() if r.status in ACTIVE]
    if not active:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    first = min(active, key=lambda r: r.requested_at)
    # The runs one send started (one per agent asked) are requested in the same append.
    runs = [
        r
        for r in view.runs.values()
        if r.message_id == first.message_id and r.requested_at == first.requested_at
    ]
    answer = Answer(chat_id, runs[0].reply_id, {r.id: r.agent for r in runs})
    return _streaming(request, rt, answer, after=_run_start(runs[0]))


@router.post(
    "/api/chat/{chat_id}/stop",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Stopped,
    responses={404: {}, 422: {}},
)
async def stop(request: Request, chat_id: ChatId) -> Stopped:
    rt = _runtime(request)
    await access.authorize(rt, caller(request), chat_id)
    view = await api.existing_view(rt, chat_id)
    cancelled = []
    for run in view.runs.values():
        if run.status not in ACTIVE:
            continue
        with contextlib.suppress(errors.RunFinished):  # ended meanwhile: nothing to stop
            await commands.cancel_run(rt.store, run.id, reason="stopped by a user")
            cancelled.append(run.id)
    return Stopped(thread_id=chat_id, cancelled=cancelled)


async def _chunks(
    request: Request, rt: Runtime, answer: Answer, after: str
) -> AsyncIterator[bytes]:
    """The stream's bytes. A client that goes closes only this: the runs go on."""
    gate = StreamGate(rt, request, answer.thread_id)
    for chunk in answer.opening():
        yield sse(chunk)
    followed = follow(
        rt, answer.thread_id, after, idle_s=rt.settings.heartbeat_s, still_open=gate.still_open
    )
    async with contextlib.aclosing(followed):
        async for item in followed:
            if item is None:
                yield HEARTBEAT
                continue
            for chunk in answer.apply(item.event):
                yield sse(chunk)
            if answer.done:
                break
            waiting = answer.waiting_call
            if (
                item.event["type"] == "run.waiting"
                and waiting is not None
                and await _still_waiting(rt, answer.thread_id, item.event, waiting)
            ):
                for chunk in answer.paused():
                    yield sse(chunk)
                break
    if gate.refusal is not None:
        yield sse({"type": "error", "errorText": "you may no longer read this chat"})
    yield DONE


async def _still_waiting(rt: Runtime, thread_id: str, event: dict[str, Any], call_id: str) -> bool:
    """Whether the run still waits for that approval (not answered since the event)."""
    state = await rt.store.run_state(str(event["run_id"]), thread_id)
    return state.get("status") == "waiting" and state.get("approval_call") == call_id
