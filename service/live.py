"""Live fan-out: one tail per partition feed per web process, many sockets.

A subscriber is registered before its backlog is read, and the tail's cursor
is an explicit feed id fixed before that, so every event after the backlog
reaches the subscriber: no gap. Positions in a thread only grow, so anything
at or below what a socket already sent is skipped: no duplicate.

A tail is a supervised `Loop`: on a Redis fault it backs off, takes a fresh
reader and reads on from its cursor, so its sockets only wait. The feed is
trimmed, though: if what followed the cursor was trimmed before the tail read
it (after an outage, or a tail that fell a whole feed behind), the tail cannot
know what it missed, and every socket of that partition is told to resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.delivery_traces import RunTraces, delivery_span
from slipstream import codec, metrics, tracing
from slipstream.backend import Backend
from slipstream.keys import Keyspace, Partition, stream_id_tuple
from slipstream.supervise import Liveness, Loop

log = logging.getLogger("slipstream.live")

_ENVELOPE = frozenset({"thread", "tid"})

TAIL_BLOCK_MS = 5_000
TAIL_COUNT = 500
# A blocking read still unanswered this long after its block is on a dead or
# paused connection (the reader has no socket timeout): give up on it.
READ_GRACE_S = 2.0
# A tail on an idle feed beats after every empty read, once per block.
TAIL_STALE_S = 3 * TAIL_BLOCK_MS / 1000
TOO_SLOW = "too slow"
MISSED = "missed events"


@dataclass(eq=False)
class Subscription:
    """Frames for one socket, and a single future its sender sleeps on.

    Cheaper than a queue and a task per wake-up: at thousands of deltas a
    second, that overhead was most of the fan-out's cost.

    Cheaper still, a sender with nothing queued may hand over `direct`, a call
    that writes a frame to its socket at once (service/ws_protocol.py): the tail
    then writes each frame itself, without waking the sender, while that call
    succeeds. `last` is the id of the last frame sent, by either: a frame at or
    before it was in the socket's snapshot or backlog already.
    """

    thread_id: str
    limit: int
    pending: deque[tuple[str, str]] = field(default_factory=deque)
    overflowed: bool = False
    why: str = ""
    direct: Callable[[str], bool] | None = None
    last: str | None = None
    sent_directly: int = 0
    _waiter: asyncio.Future[None] | None = None

    def offer(self, entry_id: str, frame: str) -> None:
        if self.overflowed:
            return  # nothing past a lost event is sent
        if self.direct is not None and not self.pending:
            if not is_after(entry_id, self.last):
                return
            try:
                written = self.direct(frame)
            except Exception:  # the sender's own send meets whatever this was
                log.debug("a direct write failed; the socket's sender takes over", exc_info=True)
                written = False
            if written:
                self.last = entry_id
                self.sent_directly += 1
                return
            # Not now (its buffer is full, or it is closing): the sender waits for it, in order.
        if len(self.pending) >= self.limit:
            # A slow socket is dropped and resyncs; it must never slow the others.
            self.drop(TOO_SLOW)
        else:
            self.pending.append((entry_id, frame))
        self.wake()

    def drop(self, why: str) -> None:
        """An event may be lost to this socket: it sends nothing more and resyncs."""
        if not self.overflowed:
            self.overflowed, self.why = True, why
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
DELETED = "thread.deleted"  # service/deletion.py: a feed entry only, not a thread event
LIST_EVENTS = frozenset(
    {
        "thread.created",
        "thread.renamed",
        "thread.archived",
        "thread.member_added",
        "thread.member_removed",
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
    reload: bool = False

    def offer(self, thread_id: str, entry_id: str) -> None:
        try:
            self.changed.put_nowait((thread_id, entry_id))
        except asyncio.QueueFull:
            self.resync()

    def resync(self) -> None:
        """Changes were lost: the socket sends the whole list again."""
        self.reload = True
        with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes the socket anyway
            self.changed.put_nowait(("", ""))


def event_frame(entry_id: str, event: dict[str, object]) -> str:
    """Serialised once per event, whatever the number of sockets it goes to."""
    return orjson.dumps({"type": "event", "id": entry_id, "event": event}).decode()


class _Tail:
    """Reads one partition feed from `cursor` on, and hands each entry to its watchers."""

    def __init__(self, hub: Hub, part: Partition, cursor: str, ordinal: int) -> None:
        self.hub = hub
        self.part = part
        self.cursor = cursor
        # How many entries the feed had had up to and including the cursor's.
        self.ordinal = ordinal
        self.name = f"live.tail.p{part.number:02d}"
        self.subscribers: dict[str, set[Subscription]] = {}
        self.stats = {"faults": 0, "resyncs": 0}
        self._reader: Redis | None = None
        self._suspect = False  # a read failed: what follows the cursor may be trimmed since
        self._stop = asyncio.Event()
        loop = Loop(self.name, self._pass, stale_after_s=TAIL_STALE_S, log=log)
        self.task = asyncio.create_task(self._run(loop), name=self.name)

    async def _run(self, loop: Loop) -> None:
        try:
            await loop.run(self._stop, self.hub.liveness)
        finally:
            await self._drop_reader()

    def stop(self) -> None:
        """End the tail: its read is cancelled (the reader has no socket timeout, so a
        cancelled read leaves nothing hanging).

        The event is set too because a cancellation can be lost: on Python 3.11,
        `asyncio.wait_for` (which fakeredis's reads use) returns its result instead
        of raising when the cancel and the result arrive together. The loop then
        ends after that pass instead of reading on for ever.
        """
        self._stop.set()
        self.task.cancel()

    async def _pass(self) -> None:
        try:
            await self._read_once()
        except Exception:
            self._suspect = True
            self.stats["faults"] += 1
            raise

    async def _read_once(self) -> None:
        backend = self.hub.backend
        if self._reader is None:
            self._reader = await backend.reader_for(self.part.feed)
        guard = asyncio.timeout(TAIL_BLOCK_MS / 1000 + READ_GRACE_S)
        try:
            async with guard:
                reply = await backend.xread(
                    self._reader,
                    {self.part.feed: self.cursor},
                    count=TAIL_COUNT,
                    block_ms=TAIL_BLOCK_MS,
                )
        except Exception as exc:
            # It may be mid-reply, or its node gone: the next pass takes a fresh one.
            await self._drop_reader(failed=True)
            if guard.expired():
                raise RedisTimeoutError(
                    f"no reply to a {TAIL_BLOCK_MS} ms blocking read {READ_GRACE_S} s after it"
                ) from exc
            raise
        entries = [entry for _stream, batch in reply for entry in batch]
        # Only a tail that was away, or a whole batch behind, can have been overtaken
        # by the trimming; checked before anything past a possible gap is handed out.
        if self._suspect or len(entries) >= TAIL_COUNT:
            if await self._trimmed_past_cursor():
                self._resync()
            self._suspect = False
        for feed_id, fields in entries:
            self.cursor = feed_id
            self.ordinal += 1
            self._fan_out(fields)
        if entries:
            self._time_deliveries(entries)

    def _time_deliveries(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        """Append to delivery of each delta some socket here watches: one clock read a batch.

        Taken once the batch was fanned out, so a delta's time covers its writes to
        every socket that took it at once; a socket whose sender is busy writes it later.
        """
        now = time.time()
        for _feed_id, fields in entries:
            if fields.get("type") != "message.delta" or not self.subscribers.get(
                fields.get("thread", "")
            ):
                continue
            appended_ms = metrics.stream_id_ms(fields.get("tid", ""))
            if appended_ms is not None:
                metrics.DELIVERY_SECONDS.observe(metrics.seconds_since_ms(appended_ms, now))

    async def _trimmed_past_cursor(self) -> bool:
        """Whether entries after the cursor left the feed before this tail read them.

        Redis does not record the last id it trimmed, but it counts the entries
        ever added: those after the cursor, less those still there, are lost.
        """
        info = await feed_info(self.hub.backend.client, self.part.feed)
        if info is None:
            return self.cursor != "0-0"  # the feed is gone, and whatever it held
        first = info.get("first-entry")
        if first and stream_id_tuple(str(first[0])) <= stream_id_tuple(self.cursor):
            return False  # the cursor's own entry is still there: nothing after it went
        added, length = info.get("entries-added"), int(info.get("length") or 0)
        if added is None:  # a server before 7.0 does not count: assume the worst
            last = str(info.get("last-generated-id") or "0-0")
            return stream_id_tuple(last) > stream_id_tuple(self.cursor)
        # Everything left is after the cursor; the entries before it are behind us.
        missing = int(added) - self.ordinal - length
        self.ordinal = int(added) - length
        return missing > 0

    def _resync(self) -> None:
        watchers = sum(len(subs) for subs in self.subscribers.values())
        log.warning(
            "%s: %s was trimmed past %s before this tail read it; %d sockets of the "
            "partition resync and %d thread lists reload",
            self.name,
            self.part.feed,
            self.cursor,
            watchers,
            len(self.hub.list_subscribers),
        )
        self.stats["resyncs"] += 1
        for subscriptions in self.subscribers.values():
            for subscription in subscriptions:
                subscription.drop(MISSED)
        for watcher in self.hub.list_subscribers:
            watcher.resync()

    async def _drop_reader(self, *, failed: bool = False) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.hub.backend.release(reader, failed=failed)

    def _fan_out(self, fields: dict[str, str]) -> None:
        thread_id = fields.get("thread", "")
        # A run's trace, at its end (traces on only: one dict lookup otherwise).
        traced = self.hub.run_traces.see(fields) if tracing.enabled(tracing.WEB) else None
        if fields.get("type") == DELETED:
            # Each list socket showing the thread sends its list again, without it;
            # the thread's own sockets close at their next beat (it is not found).
            for watcher in self.hub.list_subscribers:
                watcher.offer(thread_id, DELETED)
            return
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
        if traced is not None:
            with delivery_span(traced, fields, len(subscribers)):
                for subscription in subscribers:
                    subscription.offer(entry_id, frame)
            return
        for subscription in subscribers:
            subscription.offer(entry_id, frame)


class Hub:
    """The tails of one web process, started by the first socket of a partition.

    `liveness` records each tail's progress as `live.tail.pNN`.
    """

    def __init__(
        self,
        backend: Backend,
        keyspace: Keyspace,
        *,
        queue_size: int = 2000,
        liveness: Liveness | None = None,
    ) -> None:
        self.backend = backend
        self.keys = keyspace
        self.queue_size = queue_size
        self.liveness = liveness
        self._tails: dict[int, _Tail] = {}
        self._starting: dict[int, asyncio.Future[None]] = {}
        self.list_subscribers: set[ListSubscription] = set()
        self.run_traces = RunTraces()

    async def _tail(self, part: Partition) -> _Tail:
        """The partition's running tail, started if need be; a Redis fault on the way raises.

        Returns without yielding once the tail is there, so the caller registers
        with it before it can be stopped as idle.
        """
        while True:
            tail = self._tails.get(part.number)
            if tail is not None:
                return tail
            starting = self._starting.get(part.number)
            if starting is None:
                starting = self._starting[part.number] = asyncio.ensure_future(self._start(part))
                # Retrieved even if every caller went away meanwhile.
                starting.add_done_callback(lambda f: f.cancelled() or f.exception())
            # Shielded: one caller going away must not fail the others' start.
            await asyncio.shield(starting)

    async def _start(self, part: Partition) -> None:
        try:
            # The last id and the count of entries ever added, read at one instant.
            info = await feed_info(self.backend.client, part.feed) or {}
            cursor = str(info.get("last-generated-id") or "0-0")
            self._tails[part.number] = _Tail(
                self, part, cursor, int(info.get("entries-added") or 0)
            )
        finally:
            self._starting.pop(part.number, None)

    def tail_stats(self) -> dict[str, dict[str, int]]:
        return {tail.name: dict(tail.stats) for tail in self._tails.values()}

    async def subscribe_threads(self) -> ListSubscription:
        """Watch every partition for changes to the thread list."""
        watcher = ListSubscription()
        self.list_subscribers.add(watcher)
        try:
            await asyncio.gather(*(self._tail(part) for part in self.keys.all()))
        except BaseException:
            await self.unsubscribe_threads(watcher)
            raise
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
        tail.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await tail.task

    async def subscribe(self, thread_id: str) -> Subscription:
        """Register for the thread's events; a Redis fault starting its tail raises."""
        tail = await self._tail(self.keys.partition(thread_id))
        subscription = Subscription(thread_id, self.queue_size)
        tail.subscribers.setdefault(thread_id, set()).add(subscription)
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
        for starting in self._starting.values():
            starting.cancel()
        for tail in tails:
            tail.stop()
        await asyncio.gather(*(t.task for t in tails), return_exceptions=True)


async def feed_info(client: Redis, feed: str) -> dict[str, Any] | None:
    """XINFO STREAM of a feed; None if nothing was ever written to it."""
    try:
        info: dict[str, Any] = await client.xinfo_stream(feed)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    return info


def is_after(entry_id: str, last: str | None) -> bool:
    return last is None or stream_id_tuple(entry_id) > stream_id_tuple(last)
