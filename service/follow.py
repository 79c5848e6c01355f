"""Following one thread's events from a position: what the SSE stream and the chat
protocols (AI SDK, AG-UI) send, in stream order, with no gap and no duplicate.

The follower subscribes to the web process's live tail (service/live.py) first and
then reads the backlog after the position from the thread's stream, so an event
appended in between is in one or the other (and sent once: ids at or before the
last one sent are skipped). A follower that falls behind the tail (its
subscription overflowed) reads the stream again from its last event: its client
never sees the difference, only a pause.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from service.live import event_frame, is_after
from service.runtime import Runtime
from slipstream import codec

BACKLOG_PAGE = 1000


@dataclass(frozen=True)
class Followed:
    """One event of the thread: its stream id, the event as the API shows it (the
    websocket's `event`), and the websocket's frame for it."""

    id: str
    event: dict[str, Any]
    frame: str


async def follow(
    rt: Runtime,
    thread_id: str,
    after: str | None,
    *,
    idle_s: float,
    still_open: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncGenerator[Followed | None, None]:
    """The thread's events after `after` (None: from its first), then live, for ever.

    Yields None after each `idle_s` without an event (time for a heartbeat), and
    stops when `still_open` (asked at each wake-up) says no. The caller closes the
    generator (`contextlib.aclosing`) when its client goes; the subscription goes
    with it. The caller checks access before it follows.
    """
    last = after
    while True:
        subscription = await rt.hub.subscribe(thread_id)
        try:
            while True:
                backlog = await rt.store.read(thread_id, after=last, count=BACKLOG_PAGE)
                for stored in backlog:
                    event = codec.event_json(stored.event)
                    yield Followed(stored.id, event, event_frame(stored.id, event))
                    last = stored.id
                if len(backlog) < BACKLOG_PAGE:
                    break
            pending = subscription.pending
            while True:
                woke = await subscription.wait(idle_s)
                if subscription.overflowed:
                    break  # events were lost to this subscription: read them from the stream
                if still_open is not None and not await still_open():
                    return
                if not woke and not pending:
                    yield None
                    continue
                while pending and not subscription.overflowed:
                    entry_id, frame = pending.popleft()
                    if is_after(entry_id, last):
                        yield Followed(entry_id, orjson.loads(frame)["event"], frame)
                        last = entry_id
        finally:
            await rt.hub.unsubscribe(subscription)
