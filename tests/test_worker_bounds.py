"""A worker's bounds: never more runs than its concurrency, and no item taken over for ever."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

from consumers.llm.base import Prompt
from consumers.llm.parts import Part, TextPart
from consumers.worker import UNDELIVERABLE_MARGIN, Worker
from service import commands
from slipstream.backend import Backend, as_entries
from slipstream.config import Settings
from slipstream.keys import WORKERS_GROUP
from slipstream.store import EventStore
from tests.waits import until


class CountingLLM:
    """Holds every answer at a gate and counts how many are streaming at once."""

    name = "counting"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.active = 0
        self.most = 0
        self.done = 0

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await self.gate.wait()
            yield TextPart("Done.")
        finally:
            self.active -= 1
            self.done += 1


async def test_a_worker_never_holds_more_runs_than_its_concurrency(
    served_backend: Backend, settings: Settings
) -> None:
    # Three slots and four partitions: reads must take fewer items than partitions.
    bounded = dataclasses.replace(settings, worker_concurrency=3, lease_ms=300)
    store = EventStore.from_settings(served_backend, bounded)
    threads = [(await commands.create_thread(store))[0] for _ in range(12)]
    for thread_id in threads[:4]:
        await commands.send_message(store, thread_id, "left by a dead worker", "assistant")
    # A worker that read four items and died: they are taken over once idle for a lease.
    for part in store.keys.all():
        await served_backend.client.xgroup_create(part.work, WORKERS_GROUP, id="0", mkstream=True)
    ghost = Worker(served_backend, store, CountingLLM(), bounded, name="ghost:1:dead")
    assert len(await ghost._read(served_backend.client, ghost.partitions, count=4, block_ms=0)) == 4
    for thread_id in threads[4:]:
        await commands.send_message(store, thread_id, "new work", "assistant")

    llm = CountingLLM()
    worker = Worker(served_backend, store, llm, bounded)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        # Full, and it has looked for more work many times since, takeovers included.
        await until(lambda: _async(llm.active == 3 and worker.stats["full"] >= 20))
        assert len(worker.inflight) == 3
        llm.gate.set()
        await until(lambda: _async(llm.done == 12), within=20)
    finally:
        stop.set()
        await task
    assert llm.most == 3
    assert worker.stats["given_back"] + worker.stats["full"] > 0


async def test_takeovers_and_reads_at_the_same_time_still_respect_the_bound(
    served_backend: Backend, settings: Settings
) -> None:
    """Three lapsed items to take over and three new ones while the read is blocked."""
    bounded = dataclasses.replace(settings, worker_concurrency=3, lease_ms=300)
    store = EventStore.from_settings(served_backend, bounded)
    threads = [(await commands.create_thread(store))[0] for _ in range(6)]
    for part in store.keys.all():
        await served_backend.client.xgroup_create(part.work, WORKERS_GROUP, id="0", mkstream=True)
    for thread_id in threads[:3]:
        await commands.send_message(store, thread_id, "left by a dead worker", "assistant")
    ghost = Worker(served_backend, store, CountingLLM(), bounded, name="ghost:1:dead")
    assert len(await ghost._read(served_backend.client, ghost.partitions, count=3, block_ms=0)) == 3

    async def lapsed() -> bool:
        rows = await served_backend.client.xpending_range(
            store.keys.partition(threads[0]).work, WORKERS_GROUP, "-", "+", 1
        )
        return bool(rows) and int(rows[0]["time_since_delivered"]) > bounded.lease_ms

    await until(lapsed)
    llm = CountingLLM()
    worker = Worker(served_backend, store, llm, bounded)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        # On one Redis the read is still blocked, never yet full. On a cluster the
        # claims take longer than a pass of its bells, so it may be full already.
        await until(
            lambda: _async((worker.stats["full"] == 0 or served_backend.cluster) and llm.active > 0)
        )
        for thread_id in threads[3:]:  # while the read loop blocks for new work
            await commands.send_message(store, thread_id, "new work", "assistant")
        await until(lambda: _async(llm.active == 3 and worker.stats["full"] >= 20))
        assert llm.most == 3
        llm.gate.set()
        await until(lambda: _async(llm.done == 6), within=20)
    finally:
        stop.set()
        await task
    assert llm.most == 3


async def test_an_item_that_fails_before_its_run_can_count_ends_in_dead_letters(
    real_backend: Backend, settings: Settings
) -> None:
    quick = dataclasses.replace(settings, lease_ms=100, max_attempts=1)
    store = EventStore.from_settings(real_backend, quick)
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "doomed", "assistant")
    part = store.keys.partition(thread_id)
    # A run hash that is no hash at all: the claim fails before it can count anything.
    await real_backend.client.delete(part.run(sent.run_id))
    await real_backend.client.set(part.run(sent.run_id), "corrupt")
    worker = Worker(real_backend, store, CountingLLM(), quick)

    async def pending_idle_past_lease() -> bool:
        rows = await real_backend.client.xpending_range(part.work, WORKERS_GROUP, "-", "+", 1)
        return bool(rows) and int(rows[0]["time_since_delivered"]) > quick.lease_ms

    passes = 0
    while not await real_backend.client.xlen(part.dead):
        passes += 1
        assert passes <= quick.max_attempts + UNDELIVERABLE_MARGIN + 2, "taken over for ever"
        await worker.run_once()
        if not await real_backend.client.xlen(part.dead):
            await until(pending_idle_past_lease)
    dead = as_entries(await real_backend.client.xrange(part.dead))
    assert dead[0][1]["run"] == sent.run_id
    assert "run state unreadable" in dead[0][1]["reason"]
    assert (await real_backend.client.xpending(part.work, WORKERS_GROUP))["pending"] == 0
    assert worker.stats["undeliverable"] == 1


async def _async(value: bool) -> bool:
    return value
