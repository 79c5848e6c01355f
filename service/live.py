"""Live fan-out: one tail per partition feed per web process, many sockets.

A subscriber is registered before its backlog is read, and the tail's cursor
is an explicit feed id fixed before that, so every event after the backlog
reaches the subscriber: no gap. Positions in a thread only grow, so anything
at or below what a socket already sent is skipped: no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

import orjson
from redis.exceptions import RedisError

from slipstream import codec
from slipstream.backend import Backend, as_entries
from slipstream.keys import Keyspace, Partition, stream_id_tuple

log = logging.getLogger("slipstream.live")

_ENVELOPE = frozenset({"thread", "tid"})


@dataclass(eq=False)
class Subscription:
    """Frames for one socket, and a single future its sender sleeps on.

    Cheaper than a queue and a task per wake-up: at thousands of deltas a
    second, that overhead was most of the fan-out's cost.
    """

    thread_id: str
    limit: int
    pending: deque[tuple[str, str]] = field(default_factory=deque)
    overflowed: bool = False
    _waiter: asyncio.Future[None] | None = None

    def offer(self, entry_id: str, frame: str) -> None:
        if len(self.pending) >= self.limit:
            # A slow socket is dropped and resyncs; it must never slow the others.
            self.overflowed = True
        else:
            self.pending.append((entry_id, frame))
        self.wake()

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, seconds: float) -> bool:
        """Until there is something to send or `wake()`; False if `seconds` passed first."""
        if self.pending or self.overflowed:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self.wake()

        timer = loop.call_later(seconds, expire)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        return not expired


# What changes a thread's line in the thread list (not every delta).
LIST_EVENTS = frozenset(
    {
        "thread.created",
        "thread.renamed",
        "thread.archived",
        "message.sent",
        "run.requested",
        "run.started",
        "message.completed",
        "run.completed",
        "run.cancelled",
        "run.failed",
        "run.waiting",
        "run.resumed",
        "run.retrying",
        "run.restarted",
    }
)


@dataclass(eq=False)
class ListSubscription:
    """(thread id, event id) of changes to the thread list, for a socket watching it."""

    changed: asyncio.Queue[tuple[str, str]] = field(default_factory=lambda: asyncio.Queue(10_000))

    def offer(self, thread_id: str, entry_id: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.changed.put_nowait((thread_id, entry_id))


def event_frame(entry_id: str, event: dict[str, object]) -> str:
    """Serialised once per event, whatever the number of sockets it goes to."""
    return orjson.dumps({"type": "event", "id": entry_id, "event": event}).decode()


class _Tail:
    def __init__(self, hub: Hub, part: Partition) -> None:
        self.hub = hub
        self.part = part
        self.subscribers: dict[str, set[Subscription]] = {}
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"tail {part.feed}")

    async def _run(self) -> None:
        backend = self.hub.backend
        while True:  # the cursor must be fixed before any subscriber reads its backlog
            try:
                last = as_entries(await backend.client.xrevrange(self.part.feed, "+", "-", count=1))
                break
            except (ConnectionError, TimeoutError, RedisError):
                log.exception("tail of %s cannot start; retrying", self.part.feed)
                await asyncio.sleep(0.5)
        cursor = last[0][0] if last else "0-0"
        self.ready.set()
        reader = backend.reader()
        try:
            while True:
                try:
                    reply = await backend.xread(
                        reader, {self.part.feed: cursor}, count=500, block_ms=5000
                    )
                except (ConnectionError, TimeoutError, RedisError):
                    log.exception("tail of %s lost Redis; retrying", self.part.feed)
                    await asyncio.sleep(0.5)
                    continue
                for _stream, entries in reply:
                    for feed_id, fields in entries:
                        cursor = feed_id
                        self._fan_out(fields)
        finally:
            await backend.release(reader)

    def _fan_out(self, fields: dict[str, str]) -> None:
        thread_id = fields.get("thread", "")
        if self.hub.list_subscribers and fields.get("type") in LIST_EVENTS:
            for watcher in self.hub.list_subscribers:
                watcher.offer(thread_id, fields.get("tid", ""))
        subscribers = self.subscribers.get(thread_id)
        if not subscribers:
            return
        entry_id = fields.get("tid", "")
        body = {k: v for k, v in fields.items() if k not in _ENVELOPE}
        event = codec.delta_json(body)
        if event is None:
            event = codec.event_json(codec.decode(self.part.thread(thread_id), entry_id, body))
        frame = event_frame(entry_id, event)
        for subscription in subscribers:
            subscription.offer(entry_id, frame)


class Hub:
    def __init__(self, backend: Backend, keyspace: Keyspace, *, queue_size: int = 2000) -> None:
        self.backend = backend
        self.keys = keyspace
        self.queue_size = queue_size
        self._tails: dict[int, _Tail] = {}
        self.list_subscribers: set[ListSubscription] = set()

    def _tail(self, part: Partition) -> _Tail:
        tail = self._tails.get(part.number)
        if tail is None:
            tail = self._tails[part.number] = _Tail(self, part)
        return tail

    async def subscribe_threads(self) -> ListSubscription:
        """Watch every partition for changes to the thread list."""
        watcher = ListSubscription()
        self.list_subscribers.add(watcher)
        tails = [self._tail(part) for part in self.keys.all()]
        await asyncio.gather(*(tail.ready.wait() for tail in tails))
        return watcher

    async def unsubscribe_threads(self, watcher: ListSubscription) -> None:
        self.list_subscribers.discard(watcher)
        for number in list(self._tails):
            await self._stop_if_idle(number)

    async def _stop_if_idle(self, number: int) -> None:
        tail = self._tails.get(number)
        if tail is None or tail.subscribers or self.list_subscribers:
            return
        del self._tails[number]
        tail.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tail.task

    async def subscribe(self, thread_id: str) -> Subscription:
        part = self.keys.partition(thread_id)
        tail = self._tail(part)
        subscription = Subscription(thread_id, self.queue_size)
        tail.subscribers.setdefault(thread_id, set()).add(subscription)
        if not tail.ready.is_set():
            ready = asyncio.create_task(tail.ready.wait())
            await asyncio.wait({ready, tail.task}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not tail.ready.is_set():
                await self.unsubscribe(subscription)
                raise RuntimeError(f"cannot tail {part.feed}: the tail stopped before it started")
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        part = self.keys.partition(subscription.thread_id)
        tail = self._tails.get(part.number)
        if tail is None:
            return
        subscribers = tail.subscribers.get(subscription.thread_id, set())
        subscribers.discard(subscription)
        if not subscribers:
            tail.subscribers.pop(subscription.thread_id, None)
        await self._stop_if_idle(part.number)

    async def close(self) -> None:
        tails, self._tails = list(self._tails.values()), {}
        for tail in tails:
            tail.task.cancel()
        await asyncio.gather(*(t.task for t in tails), return_exceptions=True)


def is_after(entry_id: str, last: str | None) -> bool:
    return last is None or stream_id_tuple(entry_id) > stream_id_tuple(last)
