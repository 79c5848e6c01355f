"""The projector: folds each thread's new events into its stored view.

The partition feeds say which threads changed (consumer group `projectors`,
so several projectors share the work); the thread stream is the truth the
fold reads from. A view is stored with the id of the last event folded in,
by compare-and-set, so a feed entry seen twice, or by two projectors, folds
nothing twice.

The views it folded stay in a bounded in-memory cache: the next pass folds
the new events into the cached view and writes only what they changed. The
compare-and-set is the cache's validation: if another writer moved the
stored view on, the save is refused, and the view is read again.

The feeds are trimmed. Entries trimmed before this group read them say
nothing any more about which threads changed; so every read of new entries
is one MULTI that first looks at each feed and the group's position, and a
feed found trimmed past that position has its threads active since then
folded from their streams. On Redis Cluster, where no command may span
partitions, that MULTI is one per partition, and the wait for new entries is
a bell per feed (slipstream/doorbell.py) instead of one blocking read of all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from projections.compaction import Compactor
from projections.thread_view import Changes, ThreadView
from projections.views import DEFAULT_RUN_RETENTION_S, FoldFailed, Snapshot, ViewStore
from slipstream import metrics
from slipstream.backend import Backend, Entry, as_entries, as_stream_reply
from slipstream.doorbell import Doorbell
from slipstream.group_lag import GroupLag
from slipstream.keys import PROJECTOR_REGISTRY, PROJECTORS_GROUP, Partition, stream_id_tuple
from slipstream.registry import forget_dead_consumers, register
from slipstream.store import EventStore
from slipstream.supervise import Liveness, Loop, is_redis_fault, run_loops, until_done

log = logging.getLogger("slipstream.projector")

_GROUP_COUNT_LUA = (Path(__file__).parent / "group_count.lua").read_text()

CAS_ATTEMPTS = 5
REGISTRY_EVERY_S = 2.0
CLEANUP_EVERY_S = 30.0
FOLD_BLOCK_MS = 250
# A busy projector folds in batches: a pass that folded something is followed by a rest,
# until FOLD_EVERY_S after its start and at least as long as it took. Each thread's
# round trips, save and summary then cover every event of the rest, not one delta
# each (an answer streams a delta per 50 ms), and the projector keeps to half a core
# however loaded, leaving the rest to the live path; its batches grow with the load
# instead. A view read is brought to the stream's end anyway; the lists (threads'
# summaries, the run index) are what the projector has folded. So only a busy pass
# rests, one that folded BUSY_PASS entries or more: at a light load every event is
# folded at once, and a list read just after a run ended shows it.
FOLD_EVERY_S = 0.1
BUSY_PASS = 50
PENDING_PAGE = 500  # own pending entries read per XREADGROUP
THREADS_PAGE = 500  # threads per ZRANGEBYSCORE of a refold after a gap
THREAD_ERROR_LOG_EVERY_S = 60.0

FOLD_LOOP = "projector.fold"
TAKEOVER_LOOP = "projector.takeover"
# The loop whose pass is running in this task: long passes record progress under its name.
_LOOP: ContextVar[str] = ContextVar("projector_loop", default="")

Outcome = Literal["folded", "skipped", "retry"]


class Projector:
    def __init__(
        self,
        backend: Backend,
        store: EventStore,
        name: str,
        *,
        batch: int = 500,
        claim_idle_ms: int = 10_000,
        view_cache: int = 256,
        run_retention_s: int = DEFAULT_RUN_RETENTION_S,
        liveness: Liveness | None = None,
        fold_every_s: float = FOLD_EVERY_S,
        busy_pass: int = BUSY_PASS,
        compact_after_s: int = 0,
    ) -> None:
        self.backend = backend
        self.store = store
        self.fold_every_s = fold_every_s
        self.busy_pass = busy_pass
        self.views = ViewStore(store, run_retention_s=run_retention_s)
        self.view_cache = view_cache
        self._cache: OrderedDict[str, Snapshot] = OrderedDict()
        self.name = name
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.partitions = store.keys.all()
        self.stats: Counter[str] = Counter()
        self.liveness = liveness or Liveness()
        self._reader: Redis | None = None
        self._next_cleanup = 0.0
        # This name's own pending entries are read at start and after a failed
        # fold pass (whose batch was not acked), by the fold loop itself.
        self._own_pending = True
        # Feed entries the fold loop has read and not yet settled: not taken over.
        self._holding: set[str] = set()
        # Partition number -> the group position a trimmed feed was found past,
        # until the threads active since then are folded (kept across failed passes).
        self._gaps: dict[int, str] = {}
        self._thread_errors_logged: dict[str, float] = {}
        # Each feed's last id when a wait last timed out with nothing appended.
        self._quiet: dict[str, str] | None = None
        self._group_count = backend.client.register_script(_GROUP_COUNT_LUA)
        self._lag = GroupLag(backend, self.partitions, PROJECTORS_GROUP, lambda part: part.feed)
        self.compactor = Compactor(backend, store, compact_after_s)
        self._bell = (
            Doorbell(backend, [part.feed for part in self.partitions], name="projector")
            if backend.cluster
            else None
        )

    async def setup(self) -> None:
        for part in self.partitions:
            with contextlib.suppress(ResponseError):  # BUSYGROUP
                await self.backend.client.xgroup_create(
                    part.feed, PROJECTORS_GROUP, id="0", mkstream=True
                )

    def loops(self) -> list[Loop]:
        takeover_every = max(0.5, self.claim_idle_ms / 2000)
        return [
            Loop(FOLD_LOOP, self._fold_pass, log=log, on_missing_group=self.setup),
            Loop(
                TAKEOVER_LOOP,
                self._takeover_pass,
                every_s=takeover_every,
                stale_after_s=max(10.0, 3 * takeover_every),
                log=log,
                on_missing_group=self.setup,
            ),
            Loop("projector.registry", self._register, every_s=REGISTRY_EVERY_S, log=log),
            *self.compactor.loops(),
            *(self._bell.loops() if self._bell is not None else []),
            *([self._lag.loop(log)] if metrics.exported() else []),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        if not await until_done("projector.setup", self.setup, stop, log):
            return
        log.info("projector %s folding %d partitions", self.name, len(self.partitions))
        try:
            await run_loops(self.loops(), stop, self.liveness)
        finally:
            if self._reader is not None:
                await self.backend.release(self._reader)
                self._reader = None
            if self._bell is not None:
                await self._bell.close()

    async def run_once(self) -> int:
        """Burst mode: fold everything waiting, then return the number of feed entries."""
        await self.setup()
        before = self.stats["entries"]
        await self._recover()
        while await self._step(self.backend.client, block_ms=0):
            pass
        return self.stats["entries"] - before

    async def _fold_pass(self) -> None:
        _LOOP.set(FOLD_LOOP)
        if self._reader is None:
            # On a cluster the bells wait, and the fold's reads do not block.
            self._reader = self.backend.reader() if self._bell is None else self.backend.client
        started = time.monotonic()
        try:
            # A short block rather than a cancelled read: cancelling a blocked
            # command mid-reply leaves the client in a state it cannot recover.
            handled = await self._step(self._reader, block_ms=FOLD_BLOCK_MS)
        except Exception:
            await self.backend.release(self._reader)
            self._reader = None
            raise
        if handled >= self.busy_pass and self.fold_every_s > 0:
            took = time.monotonic() - started
            await self._rest(max(self.fold_every_s - took, took))

    async def _rest(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _step(self, reader: Redis, *, block_ms: int) -> int:
        """Fold one batch of new feed entries; wait up to `block_ms` if there is none."""
        try:
            return await self._fold_batch(reader, block_ms=block_ms)
        except Exception:
            self._own_pending = True  # what it read is not all acked: fold that first
            self._quiet = None
            raise

    async def _fold_batch(self, reader: Redis, *, block_ms: int) -> int:
        handled = 0
        fault: Exception | None = None  # on a cluster: a partition's, raised after the rest
        if self._own_pending:
            handled, fault = await self._fold_own_pending()
            self._own_pending = fault is not None
        parts = self.partitions
        if self._bell is not None and block_ms:
            rung = await self._bell.wait(block_ms / 1000)
            parts = [part for part in self.partitions if part.feed in rung]
            if not parts:
                if fault is not None:
                    raise fault
                return handled
        elif self._quiet is not None and block_ms:
            # The last wait saw nothing appended anywhere: nothing new, nothing
            # trimmed (only appends trim), so only wait again until there is.
            if not await self._wait(reader, self._quiet, block_ms):
                return handled
            self._quiet = None
        try:
            reply, tails, read_fault = await self._read_new(parts)
            fault = fault or read_fault
        except Exception:
            if self._bell is not None:
                self._bell.ring_all()  # a partition's read failed: look at all again
            raise
        if self._bell is not None:
            for stream, entries in reply:
                if len(entries) >= self.batch:
                    self._bell.ring(stream)  # more may wait: read it without waiting
        by_key = {part.feed: part for part in self.partitions}
        self._holding.update(entry_id for _, entries in reply for entry_id, _ in entries)
        try:
            await self._fold_gaps()  # those found now, and those a failed pass left
            for stream, entries in reply:
                await self._project(by_key[stream], entries)
                handled += len(entries)
        finally:
            self._holding.clear()
        if fault is not None:
            raise fault  # once the others are folded
        quiet_wait = self._bell is None and not reply and block_ms
        if quiet_wait and not await self._wait(reader, tails, block_ms):
            self._quiet = tails
        return handled

    async def _wait(self, reader: Redis, tails: dict[str, str], block_ms: int) -> bool:
        """Wait until a feed has an entry after `tails`; whether one came.

        Only a wait: entries are read by the next pass, after its look at the feeds.
        """
        reply = await self.backend.xread(reader, tails, count=1, block_ms=block_ms)
        return any(entries for _, entries in reply)

    async def _read_new(
        self, parts: list[Partition]
    ) -> tuple[list[tuple[str, list[Entry]]], dict[str, str], Exception | None]:
        """New entries of `parts`' feeds, each read in a MULTI after a look at its feed and group.

        Nothing can read or trim between the look and the read, so a feed trimmed
        past the group's position is seen before the read moves the position on.
        Also returns each feed's last id, for a wait when there was nothing new, and
        on a cluster the first partition's fault: the others are read all the same.
        """
        delivered: dict[str, list[Entry]] = {}
        tails: dict[str, str] = {}
        fault: Exception | None = None
        # One MULTI on one Redis; one per partition on a cluster, where each is a slot.
        for together in [[p] for p in parts] if self.backend.cluster else [parts]:
            try:
                async with self.backend.pipeline_for(together[0].feed) as pipe:
                    for part in together:
                        pipe.xinfo_groups(part.feed)
                        pipe.xinfo_stream(part.feed)
                    streams = {part.feed: ">" for part in together}
                    pipe.xreadgroup(PROJECTORS_GROUP, self.name, streams, count=self.batch)  # type: ignore[arg-type]
                    replies: list[Any] = await pipe.execute(raise_on_error=False)
                read = replies[-1]
                if isinstance(read, Exception):
                    raise read
            except Exception as exc:
                if not self.backend.cluster:
                    raise
                # Its slot moving (ASK until the move ends, maybe minutes) or its node
                # lost: the partitions after it are read all the same.
                fault = fault or exc
                if self._bell is not None:
                    self._bell.ring(together[0].feed)  # read it again next pass
                continue
            # Raw ids, entries trimmed since this name read them included.
            delivered.update(
                (str(stream), list(entries)) for stream, entries in as_stream_reply(read)
            )
            # Judged before the next MULTI: this read moved the group past any gap, so
            # a gap not noted now (the next partition's MULTI failing) is never seen.
            for n, part in enumerate(together):
                tails[part.feed] = await self._look(
                    part, replies[2 * n], replies[2 * n + 1], delivered.get(part.feed, [])
                )
        return [(s, e) for s, e in delivered.items() if e], tails, fault

    async def _look(self, part: Partition, groups: Any, info: Any, read: list[Entry]) -> str:
        """Note a gap the look before a read found in `part`'s feed; the feed's last id."""
        for answer in (groups, info):
            if isinstance(answer, Exception) and "no such key" not in str(answer).lower():
                raise answer
        if isinstance(groups, Exception) or isinstance(info, Exception):
            return "0-0"  # nothing written to it yet
        group = next((g for g in groups if g.get("name") == PROJECTORS_GROUP), None)
        if group is not None and _trimmed_unread(group, info):  # None: the read failed NOGROUP
            read_up_to = str(group.get("last-delivered-id") or "0-0")
            log.warning(
                "projector %s: %s was trimmed past %s before it was folded; folding "
                "its threads active since then from their streams",
                self.name,
                part.feed,
                read_up_to,
            )
            self.stats["gaps"] += 1
            self._note_gap(part, read_up_to)
            await self._recount(part, info, read_up_to, read)
        return str(info.get("last-generated-id") or "0-0")

    async def _recount(
        self, part: Partition, info: dict[str, Any], read_up_to: str, read: list[Entry]
    ) -> None:
        """Put the group's count of entries read right after a read across a gap."""
        if info.get("entries-added") is None:
            return  # a server before 7.0 does not count
        added, length = int(info["entries-added"]), int(info.get("length") or 0)
        if read:  # read from the feed's first entry on, in the same MULTI as the look
            at, count = read[-1][0], added - length + len(read)
            expected = at
        else:  # the feed is empty: nothing is left to read up to its last id
            at, count = str(info.get("last-generated-id") or read_up_to), added
            expected = read_up_to
        await self._group_count(keys=[part.feed], args=[PROJECTORS_GROUP, expected, at, str(count)])

    def _note_gap(self, part: Partition, since: str) -> None:
        earlier = self._gaps.get(part.number)
        if earlier is None or stream_id_tuple(earlier) > stream_id_tuple(since):
            self._gaps[part.number] = since

    async def _fold_gaps(self) -> None:
        for number, read_up_to in sorted(self._gaps.items()):
            await self._fold_active_since(self.store.keys.all()[number], read_up_to)
            del self._gaps[number]

    async def _fold_own_pending(self) -> tuple[int, Exception | None]:
        """Fold what this name read and did not ack (before a restart or a failed pass).

        On a cluster a partition that fails (its node lost) holds up no other: its
        fault is returned, for the pass to raise once the rest is done.
        """
        handled = 0
        fault: Exception | None = None
        for part in self.partitions:
            try:
                handled += await self._fold_own_pending_of(part)
            except Exception as exc:
                if not self.backend.cluster:
                    raise
                fault = fault or exc
        return handled, fault

    async def _fold_own_pending_of(self, part: Partition) -> int:
        handled = 0
        cursor = "0"
        while True:
            reply = as_stream_reply(
                await self.backend.client.xreadgroup(
                    PROJECTORS_GROUP, self.name, {part.feed: cursor}, count=PENDING_PAGE
                )
            )
            page = [entry for _, entries in reply for entry in entries]
            if not page:
                break
            cursor = page[-1][0]
            gone = [entry_id for entry_id, fields in page if not fields]
            if gone:  # trimmed before it was folded: which thread it named is lost
                self._note_gap(part, min(gone, key=stream_id_tuple))
                await self._fold_gaps()
            await self._project(part, page)
            handled += len(page)
            if len(page) < PENDING_PAGE:
                break
        return handled

    async def _takeover_pass(self) -> None:
        _LOOP.set(TAKEOVER_LOOP)
        if self._own_pending:
            return  # the fold loop is about to read this name's pending entries itself
        await self._recover()

    async def _recover(self) -> None:
        """Fold what quiet projectors (or this one's failed folds) left pending.

        Runs while the projector runs, not only at its start: a projector that
        died mid-batch has its entries folded by another within `claim_idle_ms`.
        Entries the fold loop is handling are left to it.
        """
        for part in self.partitions:
            cursor = "0-0"
            while True:
                reply = await self.backend.client.xautoclaim(
                    part.feed, PROJECTORS_GROUP, self.name, self.claim_idle_ms, cursor, count=500
                )
                cursor = str(reply[0])
                claimed = [e for e in as_entries(reply[1]) if e[0] not in self._holding]
                await self._project(part, claimed)
                trimmed = [str(i) for i in (reply[2] if len(reply) > 2 else [])]
                if trimmed:
                    # Entries trimmed from the feed before anyone folded them: which
                    # threads they touched is lost, so fold every thread active since.
                    await self._fold_active_since(part, min(trimmed, key=stream_id_tuple))
                if cursor == "0-0":
                    break

    async def _fold_active_since(self, part: Partition, entry_id: str) -> None:
        since_ms = stream_id_tuple(entry_id)[0]
        offset = 0
        while True:
            # By offset: a thread active meanwhile moves to the end, and may be
            # skipped here, but its new feed entry has it folded anyway.
            threads = await self.backend.client.zrangebyscore(
                part.threads, since_ms, "+inf", start=offset, num=THREADS_PAGE
            )
            for thread_id in threads:
                if await self._fold_thread(str(thread_id), pending=False) == "retry":
                    self.stats["refold_failed"] += 1
                self._progress()
            self.stats["refolded"] += len(threads)
            if len(threads) < THREADS_PAGE:
                return
            offset += len(threads)

    async def _register(self) -> None:
        """Say this projector is alive; forget projectors that are not and hold nothing."""
        await register(self.backend.client, PROJECTOR_REGISTRY, self.name)
        now = asyncio.get_running_loop().time()
        if now >= self._next_cleanup:
            self._next_cleanup = now + CLEANUP_EVERY_S
            self.stats["consumers_forgotten"] += await forget_dead_consumers(
                self.backend.client,
                PROJECTOR_REGISTRY,
                [part.feed for part in self.partitions],
                PROJECTORS_GROUP,
                self.name,
            )

    async def _project(self, part: Partition, entries: list[Entry]) -> None:
        """Fold the threads the entries name; ack the entries of those settled.

        A thread that fails on anything but a Redis fault is counted and logged,
        and its entries stay pending (taken over, and so retried, after
        `claim_idle_ms`), so one bad thread holds up nobody else. A Redis fault
        propagates: nothing more of the batch is acked, and the pass is retried.
        """
        if not entries:
            return
        by_thread: dict[str, list[str]] = {}
        settled: list[str] = []
        for entry_id, fields in entries:
            thread_id = fields.get("thread")
            if thread_id:
                by_thread.setdefault(thread_id, []).append(entry_id)
            else:
                settled.append(entry_id)  # trimmed since it was read, or not a thread's
        outcomes = await self._fold_threads(part, list(by_thread))
        for thread_id, ids in by_thread.items():
            if outcomes[thread_id] == "retry":
                self.stats["entries_left_pending"] += len(ids)
            else:
                settled += ids
        self._progress()
        if settled:
            await self.backend.client.xack(part.feed, PROJECTORS_GROUP, *settled)
        self.stats["entries"] += len(settled)

    async def _fold_threads(self, part: Partition, thread_ids: list[str]) -> dict[str, Outcome]:
        """Fold threads of `part` together: a round trip for their views not cached, one
        for their new events and one for their saves, rather than those for each.

        Should the batch fail on anything but a Redis fault, each thread is folded
        on its own, so one bad thread holds up nobody else.
        """
        try:
            return await self._advance_many(part, thread_ids)
        except Exception as exc:
            if is_redis_fault(exc):
                raise
        return {thread_id: await self._fold_thread(thread_id) for thread_id in thread_ids}

    async def _advance_many(self, part: Partition, thread_ids: list[str]) -> dict[str, Outcome]:
        # Taken out of the cache while folding, as in `_advance`.
        snapshots = {t: s for t in thread_ids if (s := self._cache.pop(t, None)) is not None}
        unread = [t for t in thread_ids if t not in snapshots]
        if unread:
            snapshots.update(zip(unread, await self.views.read_many(part, unread), strict=True))
        results = await self.views.advance_many(part, [snapshots[t] for t in thread_ids])
        outcomes: dict[str, Outcome] = {}
        to_save: list[tuple[str, Snapshot, Changes]] = []
        for thread_id, result in zip(thread_ids, results, strict=True):
            snapshot = snapshots[thread_id]
            if isinstance(result, FoldFailed):
                log.error(
                    "thread %s: its events do not fold; its view is left as it is",
                    thread_id,
                    exc_info=result,
                )
                self.stats["unfoldable"] += 1
                outcomes[thread_id] = "skipped"
            elif not result.events:
                if not snapshot.rebuild:
                    self._remember(thread_id, snapshot)
                outcomes[thread_id] = "folded"
            else:
                to_save.append((thread_id, snapshot, result))
        if to_save:
            saved = await self.views.save_many(part, [(s, c) for _, s, c in to_save])
            for (thread_id, snapshot, changes), stored in zip(to_save, saved, strict=True):
                if stored:
                    self.stats["folded"] += changes.events
                    self._remember(thread_id, snapshot)
                    outcomes[thread_id] = "folded"
                else:
                    # Another writer moved the view on: read it again, as `_advance` does.
                    self.stats["conflicts"] += 1
                    outcomes[thread_id] = await self._fold_thread(thread_id)
        return outcomes

    async def _fold_thread(self, thread_id: str, *, pending: bool = True) -> Outcome:
        """Fold one thread; a failure not of Redis is counted and logged, not raised.

        `pending`: the thread's feed entries stay pending when it fails (else
        it is refolded after a gap, and only its next event tries it again).
        """
        then = (
            f"its feed entries stay pending and are tried again after {self.claim_idle_ms} ms"
            if pending
            else "it is tried again on its next event"
        )
        try:
            outcome, _ = await self._advance(thread_id)
        except Exception as exc:
            if is_redis_fault(exc):
                raise
            self.stats["thread_errors"] += 1
            if self._may_log(thread_id):
                log.exception("thread %s: folding it failed; %s", thread_id, then)
            return "retry"
        if outcome == "retry":
            self.stats["contended"] += 1
            if self._may_log(thread_id):
                log.warning(
                    "thread %s: its view kept changing under us %d times; %s",
                    thread_id,
                    CAS_ATTEMPTS,
                    then,
                )
        return outcome

    def _may_log(self, thread_id: str) -> bool:
        """At most one log line a minute per thread: a thread that always fails is not a flood."""
        now = time.monotonic()
        if now - self._thread_errors_logged.get(thread_id, float("-inf")) < (
            THREAD_ERROR_LOG_EVERY_S
        ):
            return False
        if len(self._thread_errors_logged) >= 1024:
            self._thread_errors_logged.clear()  # bounded; at worst one is logged early
        self._thread_errors_logged[thread_id] = now
        return True

    async def project_thread(self, thread_id: str) -> ThreadView | None:
        """Bring one thread's stored view up to the end of its stream."""
        return (await self._advance(thread_id))[1]

    async def _advance(self, thread_id: str) -> tuple[Outcome, ThreadView | None]:
        for _ in range(CAS_ATTEMPTS):
            # Taken out of the cache while folding: a failed save must not leave it there.
            snapshot = self._cache.pop(thread_id, None) or await self.views.read(thread_id)
            try:
                changes = await self.views.advance(snapshot)
            except FoldFailed:
                log.exception(
                    "thread %s: its events do not fold; its view is left as it is", thread_id
                )
                self.stats["unfoldable"] += 1
                return "skipped", None
            if not changes.events:
                if not snapshot.rebuild:
                    self._remember(thread_id, snapshot)
                return "folded", snapshot.view
            if await self.views.save(snapshot, changes):
                self.stats["folded"] += changes.events
                self._remember(thread_id, snapshot)
                return "folded", snapshot.view
            self.stats["conflicts"] += 1
        return "retry", None  # the caller says what happens next

    def _progress(self) -> None:
        """A long pass records progress as it goes, so /healthz does not call it stuck."""
        loop = _LOOP.get()
        if loop:
            self.liveness.ok(loop)

    def _remember(self, thread_id: str, snapshot: Snapshot) -> None:
        self._cache[thread_id] = snapshot
        while len(self._cache) > self.view_cache:
            self._cache.popitem(last=False)


def _trimmed_unread(group: dict[str, Any], info: dict[str, Any]) -> bool:
    """Whether entries after the group's position left the feed before it read them.

    Redis does not record the last id it trimmed, but it counts the entries
    ever added, and those the group read: the rest, less those still there,
    are lost. Only a feed whose first entry is past the group's position can
    have lost any (trimming takes the oldest first).
    """
    read_up_to = str(group.get("last-delivered-id") or "0-0")
    first = info.get("first-entry")
    if first and stream_id_tuple(str(first[0])) <= stream_id_tuple(read_up_to):
        return False
    added, length = info.get("entries-added"), int(info.get("length") or 0)
    if added is None:  # a server before 7.0 does not count: judge by the ids alone
        return read_up_to != "0-0"
    entries_read = group.get("entries-read")
    if entries_read is None:  # not counted since the group was made, or set
        if read_up_to != "0-0":
            return int(added) > length
        entries_read = 0
    return int(added) - length - int(entries_read) > 0
