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
from slipstream.keys import PROJECTOR_REGISTRY, PROJECTORS_GROUP, Partition, stream_id_tuple
from slipstream.registry import forget_dead_consumers, register
from slipstream.store import EventStore
from slipstream.supervise import Liveness, Loop, run_loops, until_done

log = logging.getLogger("slipstream.projector")

CAS_ATTEMPTS = 5
GAP_CHECK_S = 5.0
REGISTRY_EVERY_S = 2.0
CLEANUP_EVERY_S = 30.0


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
        self.liveness = liveness or Liveness()
        self._reader: Redis | None = None
        self._next_cleanup = 0.0

    async def setup(self) -> None:
        for part in self.partitions:
            with contextlib.suppress(ResponseError):  # BUSYGROUP
                await self.backend.client.xgroup_create(
                    part.feed, PROJECTORS_GROUP, id="0", mkstream=True
                )

    def loops(self) -> list[Loop]:
        takeover_every = max(0.5, self.claim_idle_ms / 2000)
        return [
            Loop("projector.fold", self._fold_pass, log=log, on_missing_group=self.setup),
            Loop(
                "projector.takeover",
                self._recover,
                every_s=takeover_every,
                stale_after_s=max(10.0, 3 * takeover_every),
                log=log,
                on_missing_group=self.setup,
            ),
            Loop(
                "projector.gaps",
                self._gap_pass,
                every_s=GAP_CHECK_S,
                stale_after_s=3 * GAP_CHECK_S,
                log=log,
            ),
            Loop("projector.registry", self._register, every_s=REGISTRY_EVERY_S, log=log),
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

    async def run_once(self) -> int:
        """Burst mode: fold everything waiting, then return the number of feed entries."""
        await self.setup()
        before = self.stats["entries"]
        await self._recover()
        while await self._step(self.backend.client, block_ms=0):
            pass
        return self.stats["entries"] - before

    async def _fold_pass(self) -> None:
        if self._reader is None:
            self._reader = self.backend.reader()
        try:
            # A short block rather than a cancelled read: cancelling a blocked
            # command mid-reply leaves the client in a state it cannot recover.
            await self._step(self._reader, block_ms=250)
        except Exception:
            await self.backend.release(self._reader)
            self._reader = None
            raise

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
        """Fold what this name left pending, and take over what quiet projectors left.

        Runs while the projector runs, not only at its start: a projector that
        died mid-batch has its entries folded by another within `claim_idle_ms`.
        """
        for part in self.partitions:
            pending = as_stream_reply(
                await self.backend.client.xreadgroup(
                    PROJECTORS_GROUP, self.name, {part.feed: "0"}, count=10_000
                )
            )
            for _stream, entries in pending:
                await self._project(part, as_entries(entries))
            cursor = "0-0"
            while True:
                reply = await self.backend.client.xautoclaim(
                    part.feed, PROJECTORS_GROUP, self.name, self.claim_idle_ms, cursor, count=500
                )
                cursor = str(reply[0])
                await self._project(part, as_entries(reply[1]))
                trimmed = [str(i) for i in (reply[2] if len(reply) > 2 else [])]
                if trimmed:
                    # Entries trimmed from the feed before anyone folded them: which
                    # threads they touched is lost, so fold every thread active since.
                    await self._fold_active_since(part, min(trimmed, key=stream_id_tuple))
                if cursor == "0-0":
                    break

    async def _gap_pass(self) -> None:
        """Notice a feed trimmed past what this group had read, and fold what it missed."""
        for part in self.partitions:
            try:
                groups = await self.backend.client.xinfo_groups(part.feed)
                head = as_entries(await self.backend.client.xrange(part.feed, "-", "+", count=1))
            except ResponseError as exc:
                if "no such key" in str(exc).lower():
                    continue  # nothing written to this partition yet
                raise
            group = next((g for g in groups if g.get("name") == PROJECTORS_GROUP), None)
            if group is None or not head:
                continue
            read_up_to = str(group.get("last-delivered-id") or "0-0")
            if stream_id_tuple(read_up_to) >= stream_id_tuple(head[0][0]):
                continue
            if not await self._trimmed_before(part, read_up_to):
                continue
            log.warning(
                "projector %s: %s was trimmed past %s before it was folded; folding its "
                "threads active since then from their streams",
                self.name,
                part.feed,
                read_up_to,
            )
            self.stats["gaps"] += 1
            await self._fold_active_since(part, read_up_to)

    async def _trimmed_before(self, part: Partition, read_up_to: str) -> bool:
        """Whether entries after `read_up_to` were trimmed (not merely never written)."""
        info = await self.backend.client.xinfo_stream(part.feed)
        added = info.get("entries-added")
        if added is None:  # a server that does not count: judge by ids alone
            return read_up_to != "0-0"
        return int(added) > int(info.get("length", 0))

    async def _fold_active_since(self, part: Partition, entry_id: str) -> None:
        since_ms = stream_id_tuple(entry_id)[0]
        threads = await self.backend.client.zrangebyscore(part.threads, since_ms, "+inf")
        for thread_id in threads:
            await self.project_thread(str(thread_id))
        self.stats["refolded"] += len(threads)

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
