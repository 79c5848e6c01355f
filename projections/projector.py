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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from projections.thread_view import ThreadView
from projections.views import DEFAULT_RUN_RETENTION_S, FoldFailed, Snapshot, ViewStore
from slipstream.backend import Backend, as_entries, as_stream_reply
from slipstream.keys import PROJECTORS_GROUP, Partition
from slipstream.store import EventStore

log = logging.getLogger("slipstream.projector")

CAS_ATTEMPTS = 5


class Projector:
    def __init__(
        self,
        backend: Backend,
        store: EventStore,
        name: str,
        *,
        batch: int = 500,
        claim_idle_ms: int = 30_000,
        view_cache: int = 256,
        run_retention_s: int = DEFAULT_RUN_RETENTION_S,
    ) -> None:
        self.backend = backend
        self.store = store
        self.views = ViewStore(store, run_retention_s=run_retention_s)
        self.view_cache = view_cache
        self._cache: OrderedDict[str, Snapshot] = OrderedDict()
        self.name = name
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.partitions = store.keys.all()
        self.stats: Counter[str] = Counter()

    async def setup(self) -> None:
        for part in self.partitions:
            with contextlib.suppress(ResponseError):  # BUSYGROUP
                await self.backend.client.xgroup_create(
                    part.feed, PROJECTORS_GROUP, id="0", mkstream=True
                )

    async def run(self, stop: asyncio.Event) -> None:
        await self.setup()
        reader = self.backend.reader()
        log.info("projector %s folding %d partitions", self.name, len(self.partitions))
        try:
            await self._recover()
            while not stop.is_set():
                # A short block rather than a cancelled read: cancelling a blocked
                # command mid-reply leaves the client in a state it cannot recover.
                await self._step(reader, block_ms=250)
        finally:
            await self.backend.release(reader)

    async def run_once(self) -> int:
        """Burst mode: fold everything waiting, then return the number of feed entries."""
        await self.setup()
        before = self.stats["entries"]
        await self._recover()
        while await self._step(self.backend.client, block_ms=0):
            pass
        return self.stats["entries"] - before

    async def _step(self, reader: Redis, *, block_ms: int) -> int:
        streams = {part.feed: ">" for part in self.partitions}
        reply = await self.backend.xreadgroup(
            reader, PROJECTORS_GROUP, self.name, streams, count=self.batch, block_ms=block_ms
        )
        by_key = {part.feed: part for part in self.partitions}
        handled = 0
        for stream, entries in reply:
            await self._project(by_key[stream], entries)
            handled += len(entries)
        return handled

    async def _recover(self) -> None:
        """Fold what this name left pending, and what dead projectors left behind."""
        for part in self.partitions:
            pending = as_stream_reply(
                await self.backend.client.xreadgroup(
                    PROJECTORS_GROUP, self.name, {part.feed: "0"}, count=10_000
                )
            )
            for _stream, entries in pending:
                await self._project(part, entries)
            cursor = "0-0"
            while True:
                reply = await self.backend.client.xautoclaim(
                    part.feed, PROJECTORS_GROUP, self.name, self.claim_idle_ms, cursor, count=500
                )
                cursor = str(reply[0])
                await self._project(part, as_entries(reply[1]))
                if cursor == "0-0":
                    break

    async def _project(self, part: Partition, entries: list[tuple[str, dict[str, str]]]) -> None:
        if not entries:
            return
        threads = {fields["thread"] for _, fields in entries if fields.get("thread")}
        for thread_id in threads:
            await self.project_thread(thread_id)
        await self.backend.client.xack(part.feed, PROJECTORS_GROUP, *[i for i, _ in entries])
        self.stats["entries"] += len(entries)

    async def project_thread(self, thread_id: str) -> ThreadView | None:
        """Bring one thread's stored view up to the end of its stream."""
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
                return None
            if not changes.events:
                if not snapshot.rebuild:
                    self._remember(thread_id, snapshot)
                return snapshot.view
            if await self.views.save(snapshot, changes):
                self.stats["folded"] += changes.events
                self._remember(thread_id, snapshot)
                return snapshot.view
            self.stats["conflicts"] += 1
        log.warning("thread %s: view kept changing under us; left for the next pass", thread_id)
        return None

    def _remember(self, thread_id: str, snapshot: Snapshot) -> None:
        self._cache[thread_id] = snapshot
        while len(self._cache) > self.view_cache:
            self._cache.popitem(last=False)
