"""What Slipstream sends to one node itself follows the cluster's layout when it changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from slipstream.backend import Backend
from slipstream.keys import Partition
from tests.redis_cluster import Cluster
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
