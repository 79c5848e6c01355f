"""The worker: takes run work items from the partitions' work streams and runs them.

Delivery is at least once (consumer group `workers`); output is effectively
once because every write of a run carries its fencing token and the append
script refuses a stale one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from consumers.answer import AnswerWriter, Attempt
from consumers.llm.base import LLM
from consumers.prompt import prompt_for
from projections.views import ViewStore
from slipstream import errors
from slipstream import events as ev
from slipstream.backend import Backend, as_entries
from slipstream.config import Settings
from slipstream.identity import consumer_name
from slipstream.keys import WORKERS_GROUP, Partition
from slipstream.leases import Leases
from slipstream.process import unless_stopped
from slipstream.store import Append, EventStore

log = logging.getLogger("slipstream.worker")


@dataclass(frozen=True)
class WorkItem:
    partition: Partition
    entry_id: str
    run_id: str
    thread_id: str


async def ensure_group(backend: Backend, stream: str, group: str) -> None:
    with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
        await backend.client.xgroup_create(stream, group, id="0", mkstream=True)


class Worker:
    def __init__(
        self,
        backend: Backend,
        store: EventStore,
        llm: LLM,
        settings: Settings,
        *,
        name: str | None = None,
    ) -> None:
        self.backend = backend
        self.store = store
        self.views = ViewStore(store)
        self.llm = llm
        self.settings = settings
        self.name = name or consumer_name()
        self.leases = Leases(backend, store.keys, lease_ms=settings.lease_ms)
        self.partitions = store.keys.all()
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_reclaim = 0.0

    async def setup(self) -> None:
        for part in self.partitions:
            await ensure_group(self.backend, part.work, WORKERS_GROUP)

    async def run(self, stop: asyncio.Event) -> None:
        """Take and run work until `stop` is set."""
        await self.setup()
        reader = self.backend.reader()
        log.info("worker %s taking work from %d partitions", self.name, len(self.partitions))
        try:
            while not stop.is_set():
                await self._reclaim_if_due()
                free = self.settings.worker_concurrency - len(self._tasks)
                if free <= 0:
                    await asyncio.wait(self._tasks, timeout=1, return_when=asyncio.FIRST_COMPLETED)
                    continue
                items = await unless_stopped(self._read(reader, count=free, block_ms=1000), stop)
                for item in items or []:
                    self._spawn(item)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.backend.release(reader)

    async def run_once(self) -> int:
        """Burst mode: run everything waiting, then return how many items were handled."""
        await self.setup()
        handled = 0
        while True:
            items = await self._read(self.backend.client, count=100, block_ms=0)
            items += await self._reclaim()
            if not items:
                return handled
            await asyncio.gather(*(self.handle(item) for item in items))
            handled += len(items)

    async def _read(self, reader: Redis, *, count: int, block_ms: int) -> list[WorkItem]:
        streams = {part.work: ">" for part in self.partitions}
        reply = await self.backend.xreadgroup(
            reader,
            WORKERS_GROUP,
            self.name,
            streams,
            count=count,
            block_ms=block_ms,
        )
        by_key = {part.work: part for part in self.partitions}
        return [
            self._item(by_key[stream], entry_id, fields)
            for stream, entries in reply
            for entry_id, fields in entries
        ]

    def _item(self, part: Partition, entry_id: str, fields: dict[str, str]) -> WorkItem:
        return WorkItem(part, entry_id, fields.get("run", ""), fields.get("thread", ""))

    async def _reclaim_if_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if now < self._next_reclaim:
            return
        self._next_reclaim = now + max(0.5, self.settings.lease_ms / 2000)
        for item in await self._reclaim():
            self._spawn(item)

    async def _reclaim(self) -> list[WorkItem]:
        """Take over work whose worker stopped renewing its lease (XAUTOCLAIM)."""
        items: list[WorkItem] = []
        for part in self.partitions:
            cursor = "0-0"
            while True:
                reply = await self.backend.client.xautoclaim(
                    part.work, WORKERS_GROUP, self.name, self.settings.lease_ms, cursor, count=50
                )
                cursor = str(reply[0])
                # Redis 7.0 also returns ids whose entries were deleted: as_entries drops those.
                items += [self._item(part, i, f) for i, f in as_entries(reply[1])]
                if cursor == "0-0":
                    break
        if items:
            log.info("worker %s took over %d work items", self.name, len(items))
        return items

    def _spawn(self, item: WorkItem) -> None:
        task = asyncio.create_task(self.handle(item), name=f"run {item.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drop(self, item: WorkItem) -> None:
        await self.backend.client.xack(item.partition.work, WORKERS_GROUP, item.entry_id)
        await self.backend.client.xdel(item.partition.work, item.entry_id)

    async def handle(self, item: WorkItem) -> None:
        if not item.run_id or not item.thread_id:
            log.warning("work item %s %s names no run; dropped", item.partition.work, item.entry_id)
            await self._drop(item)
            return
        claim = await self.leases.claim(item.run_id, item.thread_id, self.name)
        if claim.outcome in ("NORUN", "FINISHED"):
            log.info("run %s: %s; work item acked", item.run_id, claim.outcome.lower())
            await self._drop(item)
            return
        if claim.outcome == "BUSY":
            log.info("run %s is busy (%s); left for its owner", item.run_id, claim.detail)
            return
        attempt = Attempt(
            thread_id=item.thread_id,
            run_id=item.run_id,
            reply_id="",
            agent="",
            attempt=claim.attempt,
            token=claim.token,
            entry_id=item.entry_id,
        )
        running = asyncio.current_task()
        assert running is not None
        heartbeat = asyncio.create_task(self._heartbeat(item, claim.token, running))
        try:
            await self._execute(attempt, cancel_requested=claim.cancel_requested)
        except errors.StaleFence:
            self.stats["fenced_out"] += 1
            log.warning("run %s: lease lost to another worker; dropping it", item.run_id)
        except asyncio.CancelledError:
            if heartbeat.done() and not heartbeat.cancelled() and heartbeat.result() == "lost":
                self.stats["fenced_out"] += 1
                log.warning("run %s: lease lost while streaming; dropping it", item.run_id)
                return
            raise
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, item: WorkItem, token: int, running: asyncio.Task[None]) -> str:
        interval = self.settings.lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            ours, _cancel = await self.leases.renew(
                item.run_id, item.thread_id, token, self.name, item.entry_id
            )
            if not ours:
                running.cancel()
                return "lost"

    async def _execute(self, attempt: Attempt, *, cancel_requested: bool) -> None:
        view = await self.views.current(attempt.thread_id)
        run = view.runs.get(attempt.run_id)
        if run is None:
            raise RuntimeError(f"run {attempt.run_id} is not in the view of {attempt.thread_id}")
        attempt = Attempt(
            thread_id=attempt.thread_id,
            run_id=attempt.run_id,
            reply_id=run.reply_id,
            agent=run.agent,
            attempt=attempt.attempt,
            token=attempt.token,
            entry_id=attempt.entry_id,
        )
        if cancel_requested:
            await self._finish_cancelled(attempt)
            return
        try:
            await self._append(
                attempt,
                [
                    ev.RunStarted(
                        run_id=attempt.run_id,
                        attempt=attempt.attempt,
                        worker=self.name,
                        token=attempt.token,
                    )
                ],
                run_fields={"status": "running"},
                refuse_if_cancelled=True,
            )
            writer = AnswerWriter(self.store, attempt, self.settings.flush_ms)
            await writer.stream(self.llm.stream(prompt_for(view, attempt.run_id)))
            await writer.complete()
            self.stats["completed"] += 1
        except errors.RunCancelled:
            await self._finish_cancelled(attempt)
        except errors.ProviderError as exc:
            await self._fail(attempt, f"model error: {exc}")
        except (errors.StaleFence, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("run %s failed", attempt.run_id)
            await self._fail(attempt, f"{type(exc).__name__}: {exc}")

    async def _append(
        self,
        attempt: Attempt,
        events: list[ev.Event],
        *,
        run_fields: dict[str, str],
        refuse_if_cancelled: bool = False,
        ack: bool = False,
    ) -> None:
        await self.store.append(
            Append(
                thread_id=attempt.thread_id,
                events=events,
                run_id=attempt.run_id,
                fence=attempt.token,
                refuse_if_cancelled=refuse_if_cancelled,
                batch_id=events[0].event_id,
                run_fields=run_fields,
                ack=attempt.entry_id if ack else None,
            )
        )

    async def _finish_cancelled(self, attempt: Attempt) -> None:
        self.stats["cancelled"] += 1
        await self._append(
            attempt,
            [ev.RunCancelled(run_id=attempt.run_id, reason="cancelled by request")],
            run_fields={"status": "cancelled"},
            ack=True,
        )

    async def _fail(self, attempt: Attempt, reason: str) -> None:
        self.stats["failed"] += 1
        await self._append(
            attempt,
            [ev.RunFailed(run_id=attempt.run_id, reason=reason)],
            run_fields={"status": "failed"},
            ack=True,
        )
