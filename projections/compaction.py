"""Compaction: the deltas of answers completed long enough ago leave the thread stream.

An answer streams as many `message.delta` entries as it has flushes, and its
`message.completed` holds the whole text again. Once the completion is older than
SLIPSTREAM_COMPACT_AFTER, the deltas are dead weight, and the projector (the
role that folds completions) removes them with XDEL, thread by thread. XDEL frees
no memory while a stream node keeps one entry, so projections/compact.lua then
writes the stream again: the same entries under the same ids (every position a
client holds stays good), its counters and its lifetime. Only a stream of at most
REWRITE_MAX_ENTRIES and REWRITE_MAX_BYTES, as Redis does nothing else meanwhile; a
longer one keeps what XDEL freed (the nodes the removed deltas filled on their own).

It keeps what a fold still takes from them: the first delta of the answer's last
attempt (the message's place and time, its agent, the run's time to first token)
and every delta of an attempt given up (a retried answer's first try), and the
completion carries the attempt's last sequence number (`seq`), with which the fold
counts the deltas it did not see. So a fold from scratch of the compacted stream
gives the very view the whole stream gave; each thread's plan is checked by doing
both folds before anything is removed, and a plan that would change the view is
dropped. Answers whose completion has no `seq` (written before it existed, or
written whole) are left as they are.

Which threads to look at: each pass reads the partitions' thread indexes (by last
activity) from where the last pass stopped (`ss:{pNN}:compact:cursor`, so a restart
goes on from there), and schedules each thread active since
for a look SLIPSTREAM_COMPACT_AFTER after that activity, in `ss:{pNN}:compact`
(a sorted set: one entry per thread at most, gone once nothing of it is left to
compact, and with the thread when it is deleted). Each pass then compacts at most
THREADS_PER_PASS due threads; projections/compact.lua removes the entries and moves
the thread's schedule in one step, so a thread deleted meanwhile leaves nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from projections.thread_view import ThreadView, fold, stream_ms
from slipstream import codec
from slipstream import events as ev
from slipstream.backend import Backend, Entry, stream_pages
from slipstream.keys import Partition, stream_id_tuple
from slipstream.store import EventStore, Stored
from slipstream.supervise import Loop, is_redis_fault

log = logging.getLogger("slipstream.compaction")

_COMPACT_LUA = (Path(__file__).parent / "compact.lua").read_text()

COMPACT_LOOP = "projector.compact"
EVERY_S = 5.0
THREADS_PER_PASS = 50  # threads compacted per pass, across partitions
SCHEDULE_PAGE = 500  # threads of a partition's index scheduled per pass
READ_PAGE = 500  # entries of a thread stream read a round trip
# The thread index is written after the events it follows: a pass reads again the
# last minute of it, so an entry written late is still seen (scheduling is idempotent).
INDEX_SLACK_MS = 60_000
MAX_ENTRIES = 20_000  # a longer stream is left as it is: one pass reads and folds it whole
# compact.lua writes a stream again only up to these (XLEN, MEMORY USAGE): Redis serves
# nothing else meanwhile, about 15 ms for 2,000 entries (over a second for 20,000 of
# 4 kB, past every client's command timeout). A longer one keeps what XDEL freed.
REWRITE_MAX_ENTRIES = 2_000
REWRITE_MAX_BYTES = 2_000_000
# Events after which a run's answer is written again from its start.
_RESETS = (ev.RunStarted, ev.RunRetrying, ev.RunRestarted)


@dataclass
class Plan:
    """What a pass may remove from one thread, and when its next answer falls due."""

    drop: list[str] = field(default_factory=list)
    next_completed_ms: int | None = None


def plan(stored: list[Stored], cutoff_ms: int) -> Plan:
    """The deltas of answers completed at or before `cutoff_ms` that a fold can do without.

    Of an answer's deltas since its previous completion, only those of the attempt the
    completion closes (the trailing ones) and only when they are exactly sequence
    numbers 1 to the completion's `seq`, with no new attempt of the run among them:
    all of those but the first go. Anything else is left whole.
    """
    result = Plan()
    seen: dict[str, list[tuple[str, ev.MessageDelta]]] = {}
    reset_at: dict[str, str] = {}
    for item in stored:
        event = item.event
        if isinstance(event, ev.MessageDelta):
            seen.setdefault(event.message_id, []).append((item.id, event))
        elif isinstance(event, _RESETS):
            reset_at[event.run_id] = item.id
        elif isinstance(event, ev.MessageCompleted):
            deltas = seen.pop(event.message_id, [])
            spare = _spare(deltas, event, reset_at.get(event.run_id))
            if not spare:
                continue
            if stream_ms(item.id) <= cutoff_ms:
                result.drop += spare
            elif result.next_completed_ms is None:
                result.next_completed_ms = stream_ms(item.id)
    return result


def _spare(
    deltas: list[tuple[str, ev.MessageDelta]], done: ev.MessageCompleted, reset_at: str | None
) -> list[str]:
    if done.seq is None or len(deltas) < 2:
        return []
    attempt = deltas[-1][1].attempt
    start = len(deltas)
    while start > 0 and deltas[start - 1][1].attempt == attempt:
        start -= 1
    last = deltas[start:]
    if any(delta.attempt == attempt for _, delta in deltas[:start]):
        return []  # the attempt's deltas are not one run of entries
    if [delta.seq for _, delta in last] != list(range(1, done.seq + 1)):
        return []
    if any(delta.run_id != done.run_id for _, delta in last):
        return []
    if reset_at is not None and stream_id_tuple(reset_at) > stream_id_tuple(last[0][0]):
        return []  # a new attempt began among them
    return [entry_id for entry_id, _ in last[1:]]


def folds_the_same(thread_id: str, stream_key: str, stored: list[Stored], drop: list[str]) -> bool:
    """Whether the stream without `drop` folds, from scratch, to the view the whole one does."""
    gone = set(drop)
    empty = ThreadView.empty(thread_id, stream_key)
    whole = fold(empty, stored)
    kept = fold(empty, [item for item in stored if item.id not in gone])
    return whole.model_dump() == kept.model_dump()


def _decide(thread_id: str, key: str, entries: list[Entry], cutoff_ms: int) -> Plan:
    """The plan for the thread's `entries`, with nothing to drop if that would change its view."""
    stored = [Stored(entry_id, codec.decode(key, entry_id, fields)) for entry_id, fields in entries]
    found = plan(stored, cutoff_ms)
    if found.drop and not folds_the_same(thread_id, key, stored, found.drop):
        log.warning("thread %s: compacting it would change its view; left as it is", thread_id)
        found.drop = []
    return found


class Compactor:
    """The projector's compaction loop (off when `after_s` is 0)."""

    def __init__(
        self,
        backend: Backend,
        store: EventStore,
        after_s: int,
        *,
        every_s: float = EVERY_S,
        threads_per_pass: int = THREADS_PER_PASS,
    ) -> None:
        self.backend = backend
        self.store = store
        self.after_ms = after_s * 1000
        self.every_s = every_s
        self.threads_per_pass = threads_per_pass
        self.partitions = store.keys.all()
        self.removed = 0  # entries removed, for tests and the bench
        self._cursor: dict[int, float] = {}
        self._script = backend.client.register_script(_COMPACT_LUA)

    def loops(self) -> list[Loop]:
        if self.after_ms <= 0:
            return []
        return [
            Loop(
                COMPACT_LOOP,
                self.run_pass,
                every_s=self.every_s,
                stale_after_s=max(10.0, 3 * self.every_s),
                log=log,
            )
        ]

    async def run_pass(self) -> int:
        """Schedule the threads active since the last pass, then compact those due."""
        now_ms = await self._now_ms()
        for part in self.partitions:
            await self._schedule(part, now_ms)
        budget, removed = self.threads_per_pass, 0
        for part in self.partitions:
            if budget <= 0:
                break
            due = await self.backend.client.zrangebyscore(
                part.compact, "-inf", now_ms, start=0, num=budget
            )
            budget -= len(due)
            for thread_id in due:
                removed += await self._compact_logged(part, str(thread_id), now_ms)
        return removed

    async def compact(self, thread_id: str, now_ms: int | None = None) -> int:
        """Compact one thread now (as of `now_ms`); returns the entries removed (none when off)."""
        if self.after_ms <= 0:
            return 0
        part = self.store.keys.partition(thread_id)
        return await self._compact(part, thread_id, now_ms or await self._now_ms())

    async def _entries(self, key: str) -> list[Entry]:
        """The stream's entries as stored, in pages: small ones, as a reply's parsing holds
        up the event loop (a 2,000-entry page about 70 ms)."""
        entries: list[Entry] = []
        async for page in stream_pages(self.backend.client, key, count=READ_PAGE):
            entries += page
        return entries

    async def _now_ms(self) -> int:
        # Redis's clock, the one the stream ids are made from.
        seconds, micros = await self.backend.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def _schedule(self, part: Partition, now_ms: int) -> None:
        cursor = self._cursor.get(part.number)
        if cursor is None:
            # Kept in Redis: a restarted projector goes on from there, instead of
            # scheduling every thread ever active again (each then read whole).
            saved = await self.backend.client.get(part.compact_cursor)
            cursor = float(saved) if saved else float("-inf")
            self._cursor[part.number] = cursor
        low = "-inf" if cursor == float("-inf") else f"({int(cursor)}"
        rows = cast(
            list[tuple[str, float]],
            await self.backend.client.zrangebyscore(
                part.threads, low, "+inf", start=0, num=SCHEDULE_PAGE, withscores=True
            ),
        )
        if not rows:
            return
        await self.backend.client.zadd(
            part.compact, {str(t): int(score) + self.after_ms for t, score in rows}, nx=True
        )
        last = float(rows[-1][1])
        full = len(rows) == SCHEDULE_PAGE
        moved = last if full else min(last, now_ms - INDEX_SLACK_MS)
        if moved != cursor:
            self._cursor[part.number] = moved
            await self.backend.client.set(part.compact_cursor, int(moved))

    async def _compact_logged(self, part: Partition, thread_id: str, now_ms: int) -> int:
        try:
            return await self._compact(part, thread_id, now_ms)
        except Exception as exc:
            if is_redis_fault(exc):
                raise
            log.exception("thread %s: compacting it failed; it is tried again later", thread_id)
            await self.backend.client.zadd(part.compact, {thread_id: now_ms + self.after_ms})
            return 0

    async def _compact(self, part: Partition, thread_id: str, now_ms: int) -> int:
        key = part.thread(thread_id)
        length = int(await self.backend.client.xlen(key))
        if length > MAX_ENTRIES:
            log.warning(
                "thread %s: %d entries, too long to compact; left as it is", thread_id, length
            )
        entries = await self._entries(key) if 0 < length <= MAX_ENTRIES else []
        # Decoding, planning and the two folds of a long thread take a CPU for over half
        # a second: in a thread of their own, so the projector's event loop (its folds
        # of what is appended meanwhile) does not wait them out.
        found = await asyncio.to_thread(_decide, thread_id, key, entries, now_ms - self.after_ms)
        drop = found.drop
        next_due = (
            "" if found.next_completed_ms is None else str(found.next_completed_ms + self.after_ms)
        )
        last = entries[-1][0] if entries else ""
        again = now_ms + self.after_ms
        removed = int(
            await self._script(
                keys=[key, part.compact],
                args=[
                    thread_id,
                    last,
                    next_due,
                    again,
                    REWRITE_MAX_ENTRIES,
                    REWRITE_MAX_BYTES,
                    *drop,
                ],
            )
        )
        if removed > 0:
            self.removed += removed
            log.debug("thread %s: %d deltas compacted", thread_id, removed)
        return max(removed, 0)
