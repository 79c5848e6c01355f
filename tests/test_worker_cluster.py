"""A worker on Redis Cluster, where each partition is read on its own."""

from __future__ import annotations

import dataclasses

from redis.exceptions import ResponseError

from consumers.worker import Worker
from service import commands
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import WORKERS_GROUP
from slipstream.store import EventStore
from tests.test_worker_bounds import CountingLLM
from tests.waits import until


async def test_a_partition_whose_read_keeps_failing_holds_up_no_other(
    cluster_url: str, settings: Settings
) -> None:
    """A pass reads the partitions that rang in turn and ends at one whose read fails
    (its node lost, until a replica takes over). The next pass starts after it, so the
    partitions behind it are read at once, not when the turn comes round to them."""
    wide = dataclasses.replace(settings, partitions=16)
    backend = Backend.connect(cluster_url)
    try:
        store = EventStore.from_settings(backend, wide)
        worker = Worker(backend, store, CountingLLM(), wide)
        assert worker._bell is not None
        await worker.setup()
        failing, behind = worker.partitions[2], worker.partitions[3]
        await backend.client.xgroup_destroy(failing.work, WORKERS_GROUP)  # reads: NOGROUP
        while True:
            thread_id, _ = await commands.create_thread(store)
            if store.keys.partition(thread_id).number == behind.number:
                break
        await commands.send_message(store, thread_id, "behind the failing one", "assistant")

        read = []
        for _ in range(2):  # the first pass ends at the failing partition
            items, fault = await worker._read_rung(worker._bell, free=10)
            assert isinstance(fault, ResponseError) and "NOGROUP" in str(fault)
            read += items
        assert [item.thread_id for item in read] == [thread_id]
    finally:
        await backend.close()


async def test_work_taken_over_before_a_partition_that_fails_is_kept(
    cluster_url: str, settings: Settings
) -> None:
    """Takeovers claim partition after partition (XAUTOCLAIM makes this worker the
    owner). One partition failing (its node lost) must neither drop what the others
    gave, which would wait a lease again and count a delivery each time until it is
    dead-lettered, nor keep the partitions after it from being taken over."""
    bounded = dataclasses.replace(settings, lease_ms=300)
    backend = Backend.connect(cluster_url)
    try:
        store = EventStore.from_settings(backend, bounded)
        ghost = Worker(backend, store, CountingLLM(), bounded, name="ghost:1:dead")
        worker = Worker(backend, store, CountingLLM(), bounded)
        await worker.setup()
        before, failing, after = worker.partitions[0], worker.partitions[1], worker.partitions[2]
        left: set[str] = set()
        for part in (before, after):
            while True:
                thread_id, _ = await commands.create_thread(store)
                if store.keys.partition(thread_id).number == part.number:
                    break
            await commands.send_message(store, thread_id, "left by a dead worker", "assistant")
            left.add(thread_id)
        assert len(await ghost._read(backend.client, [before, after], count=1, block_ms=0)) == 2
        await backend.client.xgroup_destroy(failing.work, WORKERS_GROUP)  # takeovers: NOGROUP

        taken: set[str] = set()

        async def all_taken_over() -> bool:
            items, fault = await worker._reclaim(limit=10)
            assert isinstance(fault, ResponseError) and "NOGROUP" in str(fault)
            taken.update(item.thread_id for item in items)
            return taken == left

        await until(all_taken_over)
    finally:
        await backend.close()
