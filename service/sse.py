"""`GET /api/threads/{id}/events/stream`: the websocket's frames as server-sent events.

For `curl -N`, `EventSource` and proxies that refuse websockets. Each frame is one
`data:` line holding exactly the websocket's JSON frame (`snapshot` when there is
no resume position, then `event` frames in stream order); an event frame's `id:`
is its stream id, so a client that reconnects with `Last-Event-ID` (EventSource
does by itself) or `?after=` gets the rest with no gap and no duplicate. While idle
a comment (`: ping`) keeps proxies from timing the response out.

Identity, access and the per-user socket limit are the websocket's: everything
that can refuse (401, 404, 429, a bad id) answers before the stream starts, and
the caller is identified and authorized again at each heartbeat, so a revoked
token or a removed member is cut off (an `error` frame, then the end).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service import access
from service.api import ThreadId, check_stream_id, existing_view
from service.follow import follow
from service.runtime import Runtime
from service.session import authenticated, caller
from service.stream_gate import StreamGate
from slipstream import errors
from slipstream.supervise import is_redis_fault

router = APIRouter(dependencies=[Depends(authenticated)])
log = logging.getLogger("slipstream.sse")

PING = b": ping\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def message(frame: str, event_id: str | None = None) -> bytes:
    """One server-sent event: the frame as its data (frames are one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {frame}\n\n".encode()


def _error(detail: str) -> bytes:
    return message(orjson.dumps({"type": "error", "detail": detail}).decode())


class _EventStream(StreamingResponse):
    """A StreamingResponse that closes its body when the client goes, at once: the
    body holds a live-tail subscription and a socket's place, given back in its
    `finally` (a bare StreamingResponse leaves that to the garbage collector)."""

    body_iterator: AsyncIterator[bytes]

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        super().__init__(body, media_type="text/event-stream", headers=HEADERS)
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                await aclose()


@router.get(
    "/api/threads/{thread_id}/events/stream",
    # Never ends: out of the published schema, which the API fuzzer walks.
    include_in_schema=False,
    response_class=StreamingResponse,
)
async def event_stream(
    request: Request,
    thread_id: ThreadId,
    after: Annotated[
        str | None, Query(description="resume after this stream id (as the websocket's)")
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="resume after this id; wins over `after`"),
    ] = None,
) -> StreamingResponse:
    """The thread's frames as server-sent events, live, until the client goes."""
    check_stream_id(last_event_id, "Last-Event-ID")
    check_stream_id(after, "after")
    rt: Runtime = request.app.state.runtime
    who = caller(request)
    await access.authorize(rt, who, thread_id)  # a stranger: the 404 of a missing thread
    resume = last_event_id if last_event_id is not None else after
    snapshot: bytes | None = None
    if resume is None:
        view = await existing_view(rt, thread_id)
        frame = {
            "type": "snapshot",
            "view": view.model_dump(mode="json"),
            "last_event_id": view.last_event_id,
        }
        snapshot = message(orjson.dumps(frame).decode(), view.last_event_id)
        resume = view.last_event_id
    elif not await rt.store.exists(thread_id):
        raise errors.ThreadNotFound(thread_id)
    gate = StreamGate(rt, request, thread_id, socket_id=uuid.uuid4().hex)
    assert gate.socket_id is not None
    await rt.limits.hold_socket(who.user, gate.socket_id)  # 429 past the user's sockets
    return _EventStream(_frames(rt, gate, who.user, snapshot, resume))


async def _frames(
    rt: Runtime, gate: StreamGate, user: str, snapshot: bytes | None, after: str | None
) -> AsyncIterator[bytes]:
    try:
        if snapshot is not None:
            yield snapshot
        followed = follow(
            rt, gate.thread_id, after, idle_s=rt.settings.heartbeat_s, still_open=gate.still_open
        )
        async with contextlib.aclosing(followed) as events:
            async for item in events:
                yield PING if item is None else message(item.frame, item.id)
        if gate.refusal is not None:
            yield _error(gate.refusal)
    except Exception as exc:
        if not is_redis_fault(exc):
            raise
        log.debug("event stream ended on a Redis fault: %s", exc)
        # The client reconnects (EventSource by itself) with Last-Event-ID.
        yield _error("Redis is unavailable: try again later")
    finally:
        # Its place lapses by itself anyway (service/limits.py): a fault here costs nothing.
        with contextlib.suppress(Exception):
            await rt.limits.release_socket(user, str(gate.socket_id))
