"""What Slipstream sends to one node itself follows the cluster's layout when it changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot
from redis.exceptions import AskError, RedisError

from projections.projector import Projector
from service import commands
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace, Partition
from slipstream.store import EventStore
from slipstream.supervise import run_loops
from tests.redis_cluster import Cluster
from tests.test_cluster_scripts import another_master, begin_move, finish_move, migrate
from tests.test_projector_faults import thread_in, view_title
from tests.waits import until

pytestmark = pytest.mark.slow


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster for this test alone: it pauses a master until its replica takes over."""
    cluster = Cluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def test_a_partitions_multi_follows_a_paused_master_to_its_successor(
    own_cluster: Cluster,
) -> None:
    """A master that hangs (paused, not gone: its connections stay open) times out, and
    its replica takes over. A partition's MULTI (pipeline_for) goes to a node of its own
    choosing, by the cluster client's layout: a timeout must refresh that layout too, or
    a process whose only commands to the partition are MULTIs asks the hung node for ever."""
    key = Partition(0).feed
    backend = Backend.connect(own_cluster.url)
    paused = own_cluster.master_of(key)
    [successor] = own_cluster.replicas_of(paused)

    async def multi() -> list[object]:
        async with backend.pipeline_for(key) as pipe:
            pipe.incr(key + ":n")
            pipe.get(key + ":n")
            return list(await pipe.execute())

    def role() -> str:
        with successor.client() as client:
            return str(client.execute_command("ROLE")[0])

    async def promoted() -> bool:
        return await asyncio.to_thread(role) == "master"

    async def answers() -> bool:
        try:
            await multi()
        except RedisError:
            return False
        return True

    try:
        assert await multi() == [1, "1"]
        paused.pause()
        await until(promoted, within=30)
        await until(answers, within=15)
    finally:
        paused.resume()
        await backend.close()
    assert (await asyncio.to_thread(own_cluster.master_of, key)).port == successor.port


async def test_a_partition_whose_slot_is_moving_holds_up_no_others_views(
    own_cluster: Cluster, settings: Settings
) -> None:
    """While a partition's slot moves key by key, its MULTI (on a plain connection to the
    slot's old master) is refused with ASK until the move ends, which may take minutes.
    The projector reads the other partitions meanwhile, and still reports the fault."""
    backend = Backend.connect(own_cluster.url)
    store = EventStore(backend, Keyspace(settings.partitions))
    projector = Projector(backend, store, "p1")
    moving, other = projector.partitions[0], projector.partitions[-1]
    slot = key_slot(moving.feed.encode())
    source = own_cluster.master_of(moving.feed)
    target = another_master(own_cluster, source)
    try:
        await projector.run_once()  # nothing yet: its first pass is behind it
        thread_id = await thread_in(store, other, "before")
        await commands.update_thread(store, thread_id, title="during")
        await asyncio.to_thread(begin_move, slot, source, target)
        await asyncio.to_thread(migrate, source, target, [moving.feed])

        with pytest.raises(AskError):
            await projector._fold_pass()  # the moving partition's MULTI is refused
        assert await view_title(store, thread_id) == "during"  # the others were read
    finally:
        await asyncio.to_thread(finish_move, own_cluster, slot, source, target)
        await backend.close()


async def test_a_lost_master_holds_up_no_other_partitions_views(
    own_cluster: Cluster, settings: Settings
) -> None:
    """A master is lost and, for as long as no replica takes over, its partitions answer
    nothing. The projector goes on folding the partitions of the other masters, pass
    after pass (a failed pass leaves the next to fold its own unacked entries first)."""
    backend = Backend.connect(own_cluster.url)
    store = EventStore(backend, Keyspace(settings.partitions))
    projector = Projector(backend, store, "p1")
    lost_part = projector.partitions[0]
    lost = own_cluster.master_of(lost_part.feed)
    other = next(p for p in projector.partitions if own_cluster.master_of(p.feed).port != lost.port)
    stop = asyncio.Event()
    bells: asyncio.Task[None] | None = None
    try:
        thread_id = await thread_in(store, other, "before")
        # Folded before the loss, so every master has the scripts a fold calls: one new
        # to a node is loaded on every master, and the lost one would refuse that.
        await projector.run_once()
        assert await view_title(store, thread_id) == "before"
        # The outage lasts: the lost master's replica may not take over, and the other
        # masters serve their slots while some are not covered.
        for node in own_cluster.live_nodes():
            with node.client() as client:
                client.config_set("cluster-require-full-coverage", "no")
        for node in own_cluster.replicas_of(lost):
            with node.client() as client:
                client.config_set("cluster-replica-no-failover", "yes")
        lost.kill()
        assert projector._bell is not None
        bells = asyncio.create_task(run_loops(projector._bell.loops(), stop, None))

        for attempt in range(3):
            title = f"during {attempt}"
            await commands.update_thread(store, thread_id, title=title)

            async def folded(title: str = title) -> bool:
                with contextlib.suppress(RedisError):  # the lost partition's reads fail
                    await projector._fold_pass()
                return await view_title(store, thread_id) == title

            await until(folded, within=20)
    finally:
        stop.set()
        if bells is not None:
            await bells
        await backend.close()
