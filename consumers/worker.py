"""The worker process: takes run work items from the partitions and runs them.

Delivery is at least once (consumer group `workers`); output is effectively
once because every write of a run carries its fencing token and the append
script refuses a stale one. Beside the runs themselves a worker fires due
retry timers, takes over work whose lease lapsed, listens for cancels, and
on shutdown hands its unfinished runs back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from consumers import workflows
from consumers.llm.base import LLM
from consumers.runner import Runner, WorkItem
from consumers.schedules import Schedules
from slipstream import errors, logs, metrics, tracing
from slipstream.backend import Backend, as_entries
from slipstream.clock import Clock, SystemClock, is_test_clock
from slipstream.config import Settings
from slipstream.doorbell import Doorbell
from slipstream.group_lag import GroupLag
from slipstream.identity import consumer_name
from slipstream.keys import WORKER_REGISTRY, WORKERS_GROUP, Partition
from slipstream.leases import Claim, Leases
from slipstream.registry import forget_dead_consumers, register
from slipstream.store import EventStore
from slipstream.supervise import OUTAGES, Liveness, Loop, is_redis_fault, run_loops, until_done

log = logging.getLogger("slipstream.worker")

READ_BLOCK_MS = 250
TIMER_CHECK_S = 0.2
SCHEDULE_CHECK_S = 1.0
REGISTRY_EVERY_S = 2.0
CLEANUP_EVERY_S = 30.0
# Deliveries past the attempt bound before an item counts as undeliverable: a run
# whose worker dies is delivered once per attempt, so this never cuts a real one short.
UNDELIVERABLE_MARGIN = 3
TIMERS_PER_CALL = 100  # due timers fired per partition per pass: one script call's work


async def ensure_groups(backend: Backend, streams: list[str], group: str) -> None:
    """Create `group` on each stream (and the stream) unless it exists: one round trip,
    on a worker's start (a cluster's client splits the pipeline by node)."""
    async with backend.client.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xgroup_create(stream, group, id="0", mkstream=True)
        replies = await pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, ResponseError) and "BUSYGROUP" in str(reply):
            continue  # it exists already
        if isinstance(reply, Exception):
            raise reply


@dataclass
class InFlight:
    item: WorkItem
    claim: Claim
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    lost: bool = False


class Worker:
    def __init__(
        self,
        backend: Backend,
        store: EventStore,
        llm: LLM,
        settings: Settings,
        *,
        name: str | None = None,
        clock: Clock | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self.backend = backend
        self.clock = clock or SystemClock()
        self._own_clock = is_test_clock(self.clock)
        self.liveness = liveness or Liveness()
        self.store = store
        self.settings = settings
        self.name = name or consumer_name()
        self.runner = Runner(store, llm, settings, self.name, clock=self.clock)
        self.schedules = Schedules(store, self.clock)
        self.leases = Leases(backend, store.keys, lease_ms=settings.lease_ms, batch=store.batch)
        self.partitions = store.keys.all()
        self.by_work_key = {part.work: part for part in self.partitions}
        self.stats: Counter[str] = Counter()
        self.inflight: dict[str, InFlight] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._rotation = 0
        self._unclaimed: dict[str, WorkItem] = {}  # spawned, lease not taken yet
        self._reader: Redis | None = None
        # On a cluster no read may span partitions: a bell per partition says which to read.
        self._bell = (
            Doorbell(backend, [part.work for part in self.partitions], name="worker")
            if backend.cluster
            else None
        )
        self._pubsub: PubSub | None = None
        self._cancel_nodes: dict[str, str] = {}  # the node of each cancel channel subscribed
        lua = resources.files("slipstream").joinpath
        self._fire = backend.client.register_script(lua("lua/fire_timers.lua").read_text())
        self._give_back_script = backend.client.register_script(
            lua("lua/give_back.lua").read_text()
        )
        self._lag = GroupLag(
            backend, self.partitions, WORKERS_GROUP, lambda part: part.work, deleted_when_done=True
        )

    async def setup(self) -> None:
        await ensure_groups(self.backend, [part.work for part in self.partitions], WORKERS_GROUP)
        await self.schedules.ensure_declared()

    # -- the loops ------------------------------------------------------------

    def loops(self) -> list[Loop]:
        """The worker's jobs, each supervised on its own so one fault stops none of the others."""
        takeover_every = max(0.5, self.settings.lease_ms / 4000)
        return [
            Loop("worker.read", self._read_pass, log=log, on_missing_group=self.setup),
            Loop(
                "worker.takeover",
                self._takeover_pass,
                every_s=takeover_every,
                stale_after_s=max(10.0, 3 * takeover_every),
                log=log,
                on_missing_group=self.setup,
            ),
            Loop("worker.timers", self._fire_due_timers, every_s=TIMER_CHECK_S, log=log),
            Loop("worker.schedules", self._schedules_pass, every_s=SCHEDULE_CHECK_S, log=log),
            Loop("worker.registry", self._register, every_s=REGISTRY_EVERY_S, log=log),
            Loop(
                "worker.cleanup",
                self._forget_dead_consumers,
                every_s=CLEANUP_EVERY_S,
                stale_after_s=3 * CLEANUP_EVERY_S,
                log=log,
            ),
            Loop("worker.cancels", self._cancel_pass, log=log),
            *(self._bell.loops() if self._bell is not None else []),
            *([self._lag.loop(log)] if metrics.exported() else []),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Take and run work until `stop` is set, then hand unfinished runs back."""
        if not await until_done("worker.setup", self.setup, stop, log):
            return
        log.info("worker %s taking work from %d partitions", self.name, len(self.partitions))
        try:
            await run_loops(self.loops(), stop, self.liveness)
        finally:
            await self._shut_down()
            await self._close_listener()
            if self._reader is not None:
                await self.backend.release(self._reader)
                self._reader = None
            if self._bell is not None:
                await self._bell.close()

    async def run_once(self) -> int:
        """Burst mode: run everything waiting (due timers too), then return the count."""
        await self.setup()
        handled = 0
        slots = asyncio.Semaphore(self.settings.worker_concurrency)

        async def bounded(item: WorkItem) -> None:
            async with slots:
                await self._guarded(item)

        while True:
            await self._fire_due_timers()
            self.stats["schedules_fired"] += await self.schedules.fire_due()
            items = await self._read(self.backend.client, self.partitions, count=100, block_ms=0)
            taken, fault = await self._reclaim(limit=10_000)
            if fault is not None:
                raise fault
            items += taken
            if not items:
                return handled
            await asyncio.gather(*(bounded(item) for item in items))
            handled += len(items)

    @property
    def free_slots(self) -> int:
        return self.settings.worker_concurrency - len(self._tasks)

    async def _read_pass(self) -> None:
        free = self.free_slots
        if free <= 0:
            self.stats["full"] += 1
            await asyncio.wait(
                self._tasks, timeout=TIMER_CHECK_S, return_when=asyncio.FIRST_COMPLETED
            )
            return
        if self._bell is not None:
            items, fault = await self._read_rung(self._bell, free)
            await self._start_at_most(items)  # what was read runs, whatever failed after
            if fault is not None:
                raise fault
            return
        if self._reader is None:
            self._reader = self.backend.reader()
        try:
            items = await self._read_at_most(self._reader, free)
        except Exception:
            # A fresh connection for the next pass: this one may be mid-reply.
            await self.backend.release(self._reader)
            self._reader = None
            raise
        await self._start_at_most(items)

    async def _read_at_most(self, reader: Redis, free: int) -> list[WorkItem]:
        """New work items, never more than `free` (XREADGROUP's COUNT is per stream)."""
        count = len(self.partitions)
        if free >= count:
            # A short block rather than a cancelled one: a read cancelled after
            # Redis delivered would strand items until their lease ran out.
            return await self._read(
                reader, self.partitions, count=free // count, block_ms=READ_BLOCK_MS
            )
        # Fewer free slots than partitions: one item from each of `free` partitions
        # in turn, so every partition is read and none is favoured.
        for _ in range(-(-count // free)):
            chosen = [self.partitions[(self._rotation + i) % count] for i in range(free)]
            self._rotation = (self._rotation + free) % count
            items = await self._read(reader, chosen, count=1, block_ms=0)
            if items:
                return items
        # Nothing waiting anywhere: block on all of them, and hand back what is too much.
        items = await self._read(reader, self.partitions, count=1, block_ms=READ_BLOCK_MS)
        await self._give_back(items[free:])
        return items[:free]

    async def _read_rung(
        self, bell: Doorbell, free: int
    ) -> tuple[list[WorkItem], Exception | None]:
        """On a cluster: new work items of the partitions whose bell rang, never more than `free`.

        Each partition is read on its own, without blocking (one command may not span
        slots); the wait is on the bells. A partition that may hold more than was
        taken rings again, so the next pass reads it without waiting. A failed read
        ends the pass with what the others gave, and the fault.
        """
        rung = await bell.wait(READ_BLOCK_MS / 1000)
        count = len(self.partitions)
        start, self._rotation = self._rotation, (self._rotation + 1) % count
        items: list[WorkItem] = []
        for offset in range(count):
            part = self.partitions[(start + offset) % count]
            if part.work not in rung:
                continue
            left = free - len(items)
            if left <= 0:
                bell.ring(part.work)  # not read in this pass: the next one reads it
                continue
            try:
                taken = await self._read(self.backend.client, [part], count=left, block_ms=0)
            except Exception as exc:
                bell.ring_all()  # read again next pass, those left unread too
                # The next pass starts after it: one that keeps failing (its node lost,
                # until a replica takes over) holds up those behind it once, not each pass.
                self._rotation = (start + offset + 1) % count
                return items, exc
            if len(taken) == left:
                bell.ring(part.work)
            items += taken
        return items, None

    async def _give_back(self, items: list[WorkItem]) -> None:
        """Return work items this worker read but has no room for, to the end of their stream."""
        by_stream: dict[str, list[str]] = {}
        for item in items:
            by_stream.setdefault(item.stream, []).append(item.entry_id)
        for stream, ids in by_stream.items():
            await self._give_back_script(keys=[stream], args=[WORKERS_GROUP, *ids])
            self.stats["given_back"] += len(ids)
        if by_stream:
            self.backend.appended()

    async def _read(
        self, reader: Redis, partitions: list[Partition], *, count: int, block_ms: int
    ) -> list[WorkItem]:
        if self.backend.cluster and len(partitions) > 1:
            # One read per partition: a command may not span a cluster's slots.
            assert not block_ms, "on a cluster a blocking read waits on one partition"
            found: list[WorkItem] = []
            for part in partitions:
                found += await self._read(reader, [part], count=count, block_ms=0)
            return found
        streams = {part.work: ">" for part in partitions}
        reply = await self.backend.xreadgroup(
            reader, WORKERS_GROUP, self.name, streams, count=count, block_ms=block_ms
        )
        return [
            self._item(stream, entry_id, fields)
            for stream, entries in reply
            for entry_id, fields in entries
        ]

    @staticmethod
    def _item(stream: str, entry_id: str, fields: dict[str, str]) -> WorkItem:
        return WorkItem(stream, entry_id, fields.get("run", ""), fields.get("thread", ""))

    def _spawn(self, item: WorkItem) -> None:
        self._unclaimed[item.entry_id] = item
        task = asyncio.create_task(self._guarded(item), name=f"run {item.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, item: WorkItem) -> None:
        try:
            await self.handle(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Most often Redis went away mid-run. The item stays pending: once its
            # lease lapses a worker takes it over, and the attempt counts.
            self.stats["errors"] += 1
            if is_redis_fault(exc):
                # One line per outage, not one per run it cuts short (slipstream/supervise.py).
                said = log.warning if OUTAGES.run_failed() else log.debug
                said("run %s: Redis fault (%s); left for takeover", item.run_id, exc)
            else:
                log.exception("run %s: unexpected error; left for takeover", item.run_id)

    async def _takeover_pass(self) -> None:
        free = self.free_slots
        if free > 0:
            items, fault = await self._reclaim(limit=free)
            await self._start_at_most(items)
            if fault is not None:
                raise fault

    async def _start_at_most(self, items: list[WorkItem]) -> None:
        """Start what the free slots allow now; give the rest back.

        Reads and takeovers run side by side, each sized by the slots free when
        it began: the one that ends second may find fewer. Counting and starting
        happen with no await between, so the bound holds exactly.
        """
        room = max(0, self.free_slots)
        for item in items[:room]:
            self._spawn(item)
        if items[room:]:
            await self._give_back(items[room:])

    async def _schedules_pass(self) -> None:
        self.stats["schedules_fired"] += await self.schedules.fire_due()

    async def _register(self) -> None:
        await register(self.backend.client, WORKER_REGISTRY, self.name)

    # -- one run --------------------------------------------------------------

    async def handle(self, item: WorkItem) -> None:
        if not item.run_id or not item.thread_id:
            log.warning("work item %s %s names no run; dropped", item.stream, item.entry_id)
            await self._drop(item)
            return
        try:
            # The claim starts the run too, and reads what a chat run's prompt needs.
            claim = await self.leases.start(
                item.run_id,
                item.thread_id,
                self.name,
                item.entry_id,
                feed_maxlen=self.store.feed_maxlen,
                max_attempts=self.settings.max_attempts,
                no_view=workflows.names(),
            )
        except errors.ThreadNotFound:
            self.stats["thread_deleted"] += 1
            log.info("run %s: its thread was deleted; work item dropped", item.run_id)
            await self._drop(item)
            return
        finally:
            self._unclaimed.pop(item.entry_id, None)
            self.backend.appended()
        if claim.outcome in ("NORUN", "FINISHED", "DUPLICATE"):
            log.info("run %s: %s; work item dropped", item.run_id, claim.outcome.lower())
            await self._drop(item)
            return
        if claim.outcome == "BUSY":
            log.info("run %s is busy (%s); left to its owner", item.run_id, claim.detail)
            return
        with (
            logs.run_context(
                thread=item.thread_id, run=item.run_id, attempt=claim.attempt, worker=self.name
            ),
            tracing.attempt_span(
                claim.trace, item.thread_id, item.run_id, claim.attempt, claim.agent, self.name
            ),
        ):
            await self._run_claimed(item, claim)

    async def _run_claimed(self, item: WorkItem, claim: Claim) -> None:
        flight = InFlight(item, claim)
        if claim.cancel_requested:
            flight.cancelled.set()
        self.inflight[item.run_id] = flight
        running = asyncio.current_task()
        assert running is not None
        heartbeat = asyncio.create_task(self._heartbeat(flight, running))
        try:
            outcome = await self.runner.run(item, claim, flight.cancelled)
            self.stats[outcome] += 1
            metrics.run_ended(claim.agent, outcome, metrics.stream_id_ms(claim.since))
            tracing.note_outcome(outcome)
        except errors.StaleFence:
            self.stats["fenced_out"] += 1
            log.warning("run %s: lease lost to another worker; dropped", item.run_id)
        except errors.RUN_GONE:
            if await self.store.exists(item.thread_id):
                raise  # not a deletion: an error like any other, left to the lease
            # Its thread was deleted (service/deletion.py): nothing is left to write to,
            # and nothing of it may be written again. Its work item goes too.
            self.stats["thread_deleted"] += 1
            log.info("run %s: its thread was deleted; the run stops", item.run_id)
            await self._drop(item)
        except asyncio.CancelledError:
            if flight.lost:
                self.stats["fenced_out"] += 1
                log.warning("run %s: lease lost while streaming; dropped", item.run_id)
                return
            if self._stopping:
                await self._hand_back(flight)
                return
            raise
        finally:
            heartbeat.cancel()
            self.inflight.pop(item.run_id, None)

    async def _heartbeat(self, flight: InFlight, running: asyncio.Task[None]) -> None:
        interval = self.settings.lease_ms / 3000
        item = flight.item
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                ours, cancel = await self.leases.renew(
                    item.run_id, item.thread_id, flight.claim.token, self.name, item.entry_id
                )
            except RedisError as exc:
                if not failing:
                    log.warning("run %s: lease renewal failed (%s); trying again", item.run_id, exc)
                failing = True
                continue
            failing = False
            if cancel:
                flight.cancelled.set()  # the cancel message may have been missed
            if not ours:
                flight.lost = True
                running.cancel()
                return

    async def _hand_back(self, flight: InFlight) -> None:
        try:
            await self.runner.hand_back(flight.item, flight.claim)
            self.stats["handed_back"] += 1
            log.info("run %s handed back", flight.item.run_id)
        except (errors.StaleFence, errors.RunFinished):
            pass  # someone else has it, or it ended: nothing to give back

    async def _drop(self, item: WorkItem) -> None:
        await self.backend.client.xack(item.stream, WORKERS_GROUP, item.entry_id)
        await self.backend.client.xdel(item.stream, item.entry_id)

    async def _shut_down(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._unclaimed:
            # Read but never started: back to the stream at once, rather than
            # pending under this name until a lease's worth of idle time passes.
            with contextlib.suppress(RedisError, OSError):
                await self._give_back(list(self._unclaimed.values()))
            self._unclaimed.clear()
        with contextlib.suppress(RedisError, OSError):  # it drops out of the registry anyway
            await self.backend.client.zrem(WORKER_REGISTRY, self.name)

    # -- cancels, takeovers, timers, consumers --------------------------------

    async def _cancel_pass(self) -> None:
        """Cancel announcements reach the run within milliseconds, between tokens too.

        They are sharded pub/sub (SPUBLISH from the scripts): a partition's channel is in
        its slot, so on a cluster only that slot's node carries it, and the listener
        (redis-py's cluster pub/sub) holds a connection to each node serving one. When a
        slot moves, its node drops the channel (`sunsubscribe`); when a master is lost,
        its replica takes the slots over. Either way the listener subscribes again, on
        the connections it has: redis-py moves the channel to its new node (closing the
        listener would drop what those connections hold unread). A listener that fails
        is closed, and the next pass makes a new one. What is announced while none
        listens is missed: the lease renewal reads the cancel flag, and the cancel guard
        refuses the run's next delta anyway.
        """
        channels = [part.cancels for part in self.partitions]
        if self._pubsub is None:
            pubsub = self.backend.client.pubsub()
            try:
                await pubsub.ssubscribe(*channels)
            except BaseException:
                await _close_pubsub(pubsub)
                raise
            self._pubsub = pubsub
            self._cancel_nodes = self._nodes_of_cancels()
        try:
            message = await self._pubsub.get_sharded_message(timeout=1.0)
            kind = message.get("type") if message else None
            if kind == "smessage" and message is not None:
                flight = self.inflight.get(str(message["data"]))
                if flight is not None:
                    flight.cancelled.set()
            elif self.backend.cluster and (
                kind == "sunsubscribe" or self._nodes_of_cancels() != self._cancel_nodes
            ):
                # Not this worker's doing: a slot moved, or a replica took over.
                log.info("worker %s: cancel channels moved; subscribing again", self.name)
                self._cancel_nodes = self._nodes_of_cancels()
                await self._pubsub.ssubscribe(*channels)
        except BaseException:
            await self._close_listener()  # a new listener on the next pass
            raise

    def _nodes_of_cancels(self) -> dict[str, str]:
        """Which node serves each cancel channel, as the cluster client knows it now ({} on
        one Redis)."""
        if not self.backend.cluster:
            return {}
        cluster = cast(RedisCluster, self.backend.client)
        nodes: dict[str, str] = {}
        for part in self.partitions:
            try:
                node = cluster.get_node_from_key(part.cancels)
            except RedisError:  # the slot is not covered now: a failover in progress
                node = None
            nodes[part.cancels] = node.name if node is not None else ""
        return nodes

    async def _close_listener(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _close_pubsub(pubsub)

    async def _reclaim(self, *, limit: int) -> tuple[list[WorkItem], Exception | None]:
        """Take over at most `limit` items whose worker stopped renewing its lease.

        What was claimed is returned even when a partition then fails, with the fault:
        a claimed item dropped would wait a lease again, a delivery counted each time.
        On a cluster the partitions after a failed one (its node lost) are still read.
        """
        items: list[WorkItem] = []
        fault: Exception | None = None
        for part in self.partitions:
            cursor = "0-0"
            try:
                while len(items) < limit:
                    reply = await self.backend.client.xautoclaim(
                        part.work,
                        WORKERS_GROUP,
                        self.name,
                        self.settings.lease_ms,
                        cursor,
                        count=min(50, limit - len(items)),
                    )
                    cursor = str(reply[0])
                    # Redis 7.0 also returns ids whose entries were deleted: as_entries drops them.
                    taken = [self._item(part.work, i, f) for i, f in as_entries(reply[1])]
                    items += await self._unless_undeliverable(part, taken)
                    if cursor == "0-0":
                        break
            except Exception as exc:
                fault = fault or exc
                if not self.backend.cluster:
                    break  # one Redis: the others would fail alike
        if items:
            log.info("worker %s took over %d work items", self.name, len(items))
        return items, fault

    async def _unless_undeliverable(self, part: Partition, items: list[WorkItem]) -> list[WorkItem]:
        """Dead-letter items taken over far more often than any run may be attempted.

        A run's attempts are counted in its run hash; this is the bound for an
        item whose handling fails before that count can be kept (a run hash that
        cannot be read), so that nothing is taken over for ever.
        """
        if not items:
            return items
        async with self.backend.client.pipeline(transaction=False) as pipe:
            for item in items:
                pipe.xpending_range(part.work, WORKERS_GROUP, item.entry_id, item.entry_id, 1)
            replies = await pipe.execute()
        bound = self.settings.max_attempts + UNDELIVERABLE_MARGIN
        kept: list[WorkItem] = []
        for item, reply in zip(items, replies, strict=True):
            delivered = int(reply[0]["times_delivered"]) if reply else 0
            if delivered <= bound:
                kept.append(item)
                continue
            reason = f"work item delivered {delivered} times without an end; run state unreadable"
            log.error("run %s: %s; dead-lettered", item.run_id, reason)
            async with self.backend.pipeline_for(part.work) as pipe:
                pipe.xadd(
                    part.dead,
                    {"run": item.run_id, "thread": item.thread_id, "reason": reason},
                    maxlen=self.settings.dead_maxlen,
                    approximate=True,
                )
                pipe.xack(part.work, WORKERS_GROUP, item.entry_id)
                pipe.xdel(part.work, item.entry_id)
                await pipe.execute()
            self.stats["undeliverable"] += 1
            metrics.DEAD_LETTERS.labels("undeliverable").inc()
        return kept

    async def _fire_due_timers(self) -> None:
        # Redis's clock decides what is due, as it does for leases, so workers whose
        # clocks differ agree; a clock given to the worker (tests) replaces it. TIME
        # on its own: a cluster's pipeline refuses a command without a key.
        if self._own_clock:
            now_ms = self.clock.now_ms()
        else:
            seconds, micros = await self.backend.client.time()
            now_ms = seconds * 1000 + micros // 1000
        # The due runs are read first, so the script is given every run hash it
        # touches; it checks again that each is still due.
        async with self.backend.client.pipeline(transaction=False) as pipe:
            for part in self.partitions:
                pipe.zrangebyscore(part.timers, "-inf", now_ms, start=0, num=TIMERS_PER_CALL)
            due: list[list[str]] = await pipe.execute()
        for part, run_ids in zip(self.partitions, due, strict=True):
            if run_ids:
                fired = await self._fire(
                    keys=[part.timers, part.work, *(part.run(r) for r in run_ids)],
                    args=[now_ms, *run_ids],
                )
                if fired:
                    self.backend.appended()
                    self.stats["timers_fired"] += len(fired)

    async def _forget_dead_consumers(self) -> None:
        """Remove consumers of dead workers that hold no work, so XINFO stays readable."""
        self.stats["consumers_forgotten"] += await forget_dead_consumers(
            self.backend.client,
            WORKER_REGISTRY,
            [part.work for part in self.partitions],
            WORKERS_GROUP,
            self.name,
        )


async def _close_pubsub(pubsub: PubSub) -> None:
    """Close a cancel listener, whatever state its connection is in."""
    # Through a typed name: redis-py types `PubSub.aclose` in some releases and not
    # in others, and a `type: ignore` would be an error under one or the other.
    aclose: Callable[[], Awaitable[None]] = pubsub.aclose
    with contextlib.suppress(RedisError, OSError):
        await aclose()
