"""`/api/threads/{id}/live`: a snapshot, then every later event in stream order.

Frames are JSON text: ``snapshot`` (when connecting without ``after``),
``event``, ``ping`` (heartbeat while idle) and ``error`` (before a refusal).
Close codes: 4401 not signed in, 4403 refused, 4429 too many sockets of one
user, 4400 bad request, 4404 unknown thread, 4008 too slow or events missed
(reconnect with ``after``), 1013 Redis unavailable while connecting (try again
later, with ``after`` if you have events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError
from starlette.websockets import WebSocketState

from service import access, auth
from service.auth import Caller
from service.limits import LimitReached
from service.live import DELETED, ListSubscription, Subscription, event_frame, is_after
from service.runtime import Runtime
from service.ws_protocol import send_now_of
from slipstream import codec, errors
from slipstream.keys import is_stream_id, is_valid_id
from slipstream.supervise import is_redis_fault

router = APIRouter()
T = TypeVar("T")
log = logging.getLogger("slipstream.websocket")

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4008
CLOSE_TRY_AGAIN = 1013
PING = orjson.dumps({"type": "ping"}).decode()
LIST_DEBOUNCE_S = 0.1


async def _refuse(socket: WebSocket, code: int, detail: str) -> None:
    await socket.send_text(orjson.dumps({"type": "error", "detail": detail}).decode())
    await socket.close(code=code, reason=detail[:120])


async def _unavailable(socket: WebSocket, exc: Exception) -> None:
    """Redis failed a command of this socket's: close it, saying to come back later."""
    log.debug("live socket closed on a Redis fault: %s", exc)
    if socket.client_state != WebSocketState.CONNECTED:
        return
    # The client may be gone too; there is nobody left to tell then.
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await _refuse(socket, CLOSE_TRY_AGAIN, "Redis is unavailable: try again later")


class _Gate:
    """Who the socket serves, asked again while it stays open.

    A socket outlives the request that opened it: a user revoked or signed out
    since, or removed from the thread, must not go on receiving its events.
    Every heartbeat the caller is identified again and, for a thread's socket,
    authorized again; a refusal closes the socket (4401, or 4404 as for a thread
    that does not exist). A Redis fault while asking is no refusal: the socket
    carries on and asks at the next beat.
    """

    def __init__(self, socket: WebSocket, thread_id: str | None = None) -> None:
        self.socket = socket
        self.thread_id = thread_id
        self.rt: Runtime = socket.app.state.runtime
        self.request = auth.Request.of(socket)
        self.caller: Caller | None = None
        self._checked = 0.0
        self._id = uuid.uuid4().hex  # its entry among the user's sockets (service/limits.py)
        self._held = False

    async def admit(self) -> bool:
        """Identify the caller of a socket just accepted; False once it was refused."""
        try:
            caller = await self.rt.auth.identify(self.request)
            await self.rt.limits.hold_socket(caller.user, self._id)
            self.caller, self._held = caller, True
        except auth.Unauthenticated as exc:
            await _refuse(self.socket, CLOSE_UNAUTHENTICATED, str(exc))
        except auth.CrossSiteRefused as exc:
            await _refuse(self.socket, CLOSE_FORBIDDEN, str(exc))
        except LimitReached as exc:
            await _refuse(self.socket, CLOSE_TOO_MANY, str(exc))
        except Exception as exc:
            if not is_redis_fault(exc):
                raise
            await _unavailable(self.socket, exc)
        self._checked = time.monotonic()
        return self.caller is not None

    async def release(self) -> None:
        """Give back the socket's place among its user's (it lapses by itself anyway)."""
        if self._held and self.caller is not None:
            self._held = False
            with contextlib.suppress(RedisError, OSError):
                await self.rt.limits.release_socket(self.caller.user, self._id)

    async def still_open(self) -> bool:
        """Whether the socket may go on; False once it was closed for its caller."""
        if time.monotonic() - self._checked < self.rt.settings.heartbeat_s:
            return True
        self._checked = time.monotonic()
        try:
            self.caller = await self.rt.auth.identify(self.request)
            await self.rt.limits.renew_socket(self.caller.user, self._id)
            await self.authorize()
        except (auth.Unauthenticated, auth.CrossSiteRefused) as exc:
            await _refuse(self.socket, CLOSE_UNAUTHENTICATED, str(exc))
            return False
        except errors.ThreadNotFound as exc:
            await _refuse(self.socket, CLOSE_NOT_FOUND, str(exc))
            return False
        except Exception as exc:
            if not is_redis_fault(exc):
                raise
        return True

    async def authorize(self) -> None:
        """ThreadNotFound unless the caller may use the socket's thread, and it still exists
        (a deleted thread's sockets close 4404 at their next beat, whoever watches)."""
        if self.thread_id is not None and self.caller is not None:
            await access.authorize(self.rt, self.caller, self.thread_id)
            if not await self.rt.store.exists(self.thread_id):
                raise errors.ThreadNotFound(self.thread_id)


@router.websocket("/api/threads/{thread_id}/live")
async def live(socket: WebSocket, thread_id: str, after: str | None = None) -> None:
    rt: Runtime = socket.app.state.runtime
    await socket.accept()
    gate = _Gate(socket, thread_id)
    if not await gate.admit():
        return
    try:
        await _live(rt, socket, gate, thread_id, after)
    finally:
        await gate.release()


async def _live(
    rt: Runtime, socket: WebSocket, gate: _Gate, thread_id: str, after: str | None
) -> None:
    if not is_valid_id(thread_id):
        await _refuse(socket, CLOSE_BAD_REQUEST, f"thread id {thread_id!r} is malformed")
        return
    if after is not None and not is_stream_id(after):
        await _refuse(socket, CLOSE_BAD_REQUEST, f"after={after!r} is not a stream id (<ms>-<seq>)")
        return
    try:
        await gate.authorize()  # a stranger, or a thread that does not exist: ThreadNotFound
        subscription = await rt.hub.subscribe(thread_id)
    except errors.ThreadNotFound as exc:  # a stranger hears what a missing thread says
        await _refuse(socket, CLOSE_NOT_FOUND, str(exc))
        return
    except Exception as exc:
        if not is_redis_fault(exc):
            raise
        await _unavailable(socket, exc)
        return
    receiver = asyncio.create_task(_receive(socket))
    try:
        last = await _catch_up(rt, socket, thread_id, after)
        # From here on nothing reads Redis: a tail's outage only makes this wait.
        await _forward(rt, socket, subscription, last, receiver, gate)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away; nothing to tell it
    except Exception as exc:
        if not is_redis_fault(exc):
            raise
        await _unavailable(socket, exc)
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await receiver
        await rt.hub.unsubscribe(subscription)


async def _catch_up(
    rt: Runtime, socket: WebSocket, thread_id: str, after: str | None
) -> str | None:
    """Send what happened before the live tail took over; return the last id sent."""
    if after is None:
        view = await rt.views.current(thread_id)
        await socket.send_text(
            orjson.dumps(
                {
                    "type": "snapshot",
                    "view": view.model_dump(mode="json"),
                    "last_event_id": view.last_event_id,
                }
            ).decode()
        )
        return view.last_event_id
    last: str | None = after
    while True:
        backlog = await rt.store.read(thread_id, after=last, count=1000)
        for stored in backlog:
            await socket.send_text(event_frame(stored.id, codec.event_json(stored.event)))
            last = stored.id
        if len(backlog) < 1000:
            return last


async def _forward(
    rt: Runtime,
    socket: WebSocket,
    subscription: Subscription,
    last: str | None,
    receiver: asyncio.Task[None],
    gate: _Gate | None = None,
) -> None:
    receiver.add_done_callback(lambda _: subscription.wake())
    pending = subscription.pending
    subscription.last = last
    # Frames the tail may write itself while nothing is queued (service/ws_protocol.py).
    direct = send_now_of(socket)
    try:
        while not receiver.done():
            if direct is not None and not pending and not subscription.overflowed:
                subscription.direct = direct
            written = subscription.sent_directly
            woke = await subscription.wait(rt.settings.heartbeat_s)
            # From here until it waits again this task sends, in order: the tail queues.
            subscription.direct = None
            if subscription.overflowed or receiver.done():
                break
            if gate is not None and not await gate.still_open():
                return
            if not woke and not pending and subscription.sent_directly == written:
                await socket.send_text(PING)  # idle for a heartbeat
                continue
            while pending and not subscription.overflowed:
                entry_id, frame = pending.popleft()
                if is_after(entry_id, subscription.last):
                    await socket.send_text(frame)
                    subscription.last = entry_id
    finally:
        subscription.direct = None
    # After a lost event nothing more is sent: the client resumes from what it has.
    if subscription.overflowed and socket.client_state == WebSocketState.CONNECTED:
        await _refuse(socket, CLOSE_TOO_SLOW, f"{subscription.why}: reconnect with after=<last id>")


async def _next(
    socket: WebSocket,
    queue: asyncio.Queue[T],
    heartbeat: float,
    stops: set[asyncio.Future[Any]],
    gate: _Gate,
) -> T | None:
    """The next queued item, with a ping after each idle `heartbeat`; None once a stop
    is done or the gate closed the socket."""
    while True:
        if not await gate.still_open():
            return None
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait(
            {getter, *stops}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            return getter.result()
        getter.cancel()
        if done:
            return None
        await socket.send_text(PING)


async def _receive(socket: WebSocket) -> None:
    """Answer client pings; return when the client disconnects."""
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text and '"ping"' in text:
            await socket.send_text('{"type":"pong"}')


def _drain(queue: asyncio.Queue[T]) -> list[T]:
    items: list[T] = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


@router.websocket("/api/live/threads")
async def live_threads(socket: WebSocket) -> None:
    """The thread list: every summary, then each summary again when its thread changes.

    The whole list again if changes were lost (the feed was trimmed past a tail).
    """
    rt: Runtime = socket.app.state.runtime
    await socket.accept()
    gate = _Gate(socket)
    if not await gate.admit():
        return
    try:
        await _live_threads(rt, socket, gate)
    finally:
        await gate.release()


async def _live_threads(rt: Runtime, socket: WebSocket, gate: _Gate) -> None:
    try:
        watcher = await rt.hub.subscribe_threads()
    except Exception as exc:
        if not is_redis_fault(exc):
            raise
        await _unavailable(socket, exc)
        return
    receiver = asyncio.create_task(_receive(socket))
    try:
        shown = await _send_list(rt, socket, gate)
        await _follow_list(rt, socket, watcher, receiver, gate, shown)
    except (WebSocketDisconnect, RuntimeError):
        pass
    except Exception as exc:
        # A summary read failed: the client reconnects and gets the whole list.
        if not is_redis_fault(exc):
            raise
        await _unavailable(socket, exc)
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await receiver
        await rt.hub.unsubscribe_threads(watcher)


async def _send_list(rt: Runtime, socket: WebSocket, gate: _Gate) -> set[str]:
    """The whole list of the caller's threads; returns their ids."""
    mine = await access.visible_threads(rt, gate.caller) if gate.caller else set()
    summaries = await (
        rt.views.summaries(500) if mine is None else rt.views.summaries_of(mine, 500)
    )
    await socket.send_text(
        orjson.dumps(
            {"type": "threads", "threads": [s.model_dump(mode="json") for s in summaries]}
        ).decode()
    )
    return {s.id for s in summaries}


async def _follow_list(
    rt: Runtime,
    socket: WebSocket,
    watcher: ListSubscription,
    receiver: asyncio.Task[None],
    gate: _Gate,
    shown: set[str],
) -> None:
    stops: set[asyncio.Future[Any]] = {receiver}
    while first := await _next(socket, watcher.changed, rt.settings.heartbeat_s, stops, gate):
        changed: dict[str, str] = {}
        # A burst of events (a run starting, a message completing) is one update each.
        await asyncio.sleep(LIST_DEBOUNCE_S)
        for thread_id, entry_id in [first, *_drain(watcher.changed)]:
            if not thread_id or changed.get(thread_id) == DELETED:
                continue  # a deleted thread stays deleted, whatever came before
            if (
                entry_id == DELETED
                or thread_id not in changed
                or is_after(entry_id, changed[thread_id])
            ):
                changed[thread_id] = entry_id
        if watcher.reload:
            watcher.reload = False
            shown = await _send_list(rt, socket, gate)
            continue
        for thread_id, entry_id in sorted(changed.items()):
            if entry_id == DELETED:
                if thread_id in shown:  # only a list that shows it is sent again
                    shown = await _send_list(rt, socket, gate)
                continue
            # Every change of every thread passes here: only the caller's go on.
            if gate.caller is not None and rt.auth.mode != "none":
                if await access.role(rt, gate.caller, thread_id) is None:
                    if thread_id in shown:  # the caller left it, or was removed
                        shown = await _send_list(rt, socket, gate)
                    continue
                shown.add(thread_id)
            # The projected summary, unless the projector has not reached the change yet.
            summary = await rt.views.summary(
                thread_id, at_least=entry_id if is_stream_id(entry_id) else None
            )
            await socket.send_text(
                orjson.dumps(
                    {"type": "thread", "summary": summary.model_dump(mode="json")}
                ).decode()
            )
