"""Scripts and cancels on a real Redis Cluster (3 masters, 3 replicas).

A cancel is announced by SPUBLISH on its partition's channel, in the
partition's slot; the worker listens with SSUBSCRIBE on each channel's node.
The runs here sit between two tokens (GatedLLM) and the lease is a minute
long, so nothing but the announcement can stop them within a second: not a
refused delta (nothing is written while the model waits), not the lease
renewal (every 20 s). The listener must follow a slot that moves and a
master that is killed, subscribing again where its channels are now.

A script is given every key it touches: during a slot's move a script whose
KEYS are all still on the old node runs there, and a key it named by itself
that has moved already fails it half-way. Given in KEYS, a key that has moved
makes the whole call TRYAGAIN until the slot has moved.

The destructive tests (a slot moved, a master killed) run on a cluster of
their own, so the session's keeps its layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import RedisError
from websockets.asyncio.client import connect

from consumers.llm.scripted import ScriptedLLM
from consumers.worker import Worker
from service import commands
from slipstream.backend import Backend, as_entries
from slipstream.config import Settings
from slipstream.keys import Keyspace
from slipstream.store import EventStore
from tests.fake_llm import GatedLLM
from tests.harness import System, frames_until, running_system
from tests.redis_cluster import Cluster, Node
from tests.test_script_keys import due_timers, lanes_and_queues, the_other_scripts
from tests.waits import until

CANCEL_WITHIN_S = 1.0
MAX_THREADS = 200  # made to find a thread on each master: far more than ever needed


def long_lease(settings: Settings) -> Settings:
    """Renewals every 20 s: a cancel seen within a second was the announcement."""
    return dataclasses.replace(settings, lease_ms=60_000)


@pytest.fixture
async def cluster_backend(cluster_url: str) -> AsyncIterator[Backend]:
    backend = Backend.connect(cluster_url)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster for this test alone: it moves slots or kills a master."""
    cluster = Cluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# -- helpers ---------------------------------------------------------------------


def node_id(node: Node) -> str:
    with node.client() as client:
        return str(client.execute_command("CLUSTER", "MYID"))


def begin_move(slot: int, source: Node, target: Node) -> None:
    with target.client() as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
    with source.client() as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))


def migrate(source: Node, target: Node, keys: list[str]) -> None:
    with source.client() as client:
        client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)


def finish_move(cluster: Cluster, slot: int, source: Node, target: Node) -> None:
    """The slot's remaining keys to `target`, then every master says it is `target`'s."""
    with source.client() as client:
        while keys := client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            migrate(source, target, [str(key) for key in keys])
    owner = node_id(target)
    others = [node for node in cluster.masters() if node not in (source, target)]
    for node in (target, source, *others):
        with node.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner)
    cluster.wait_healthy()


def move_slot(cluster: Cluster, slot: int, source: Node, target: Node) -> None:
    begin_move(slot, source, target)
    finish_move(cluster, slot, source, target)


def another_master(cluster: Cluster, than: Node) -> Node:
    return next(node for node in cluster.masters() if node.port != than.port)


async def subscribed(node: Node, channel: str) -> bool:
    """Whether someone listens to the shard channel on `node` (the worker does)."""

    def count() -> int:
        try:
            with node.client() as client:
                reply = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        except redis.RedisError:
            return 0
        return int(reply[1])

    return await asyncio.to_thread(count) > 0


def masters_of_partitions(cluster: Cluster, keys: Keyspace) -> set[int]:
    """The masters (by port) that serve at least one partition now."""
    return {cluster.master_of(part.feed).port for part in keys.all()}


async def threads_on_every_master(system: System, cluster: Cluster) -> list[str]:
    """New threads until every master that serves a partition has one: one per master."""
    store = system.runtime.store
    wanted = masters_of_partitions(cluster, store.keys)
    by_master: dict[int, str] = {}
    for _ in range(MAX_THREADS):
        thread_id = await system.new_thread()
        by_master.setdefault(cluster.master_of(store.stream_key(thread_id)).port, thread_id)
        if set(by_master) == wanted:
            return list(by_master.values())
    raise AssertionError(f"{MAX_THREADS} threads left masters {wanted - set(by_master)} out")


async def cancel_between_tokens(system: System, llm: GatedLLM, thread_id: str) -> float:
    """Start a run, cancel it while its model waits between tokens; seconds to stop."""
    llm.started.clear()
    llm.closed.clear()
    async with connect(system.ws_url(thread_id)) as socket:
        run_id = (await system.send(thread_id, "stop me"))["run_id"]
        await asyncio.wait_for(llm.started.wait(), 20)
        asked = time.monotonic()
        response = await system.http.post(f"/api/runs/{run_id}/cancel")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "cancel_requested"
        await asyncio.wait_for(frames_until(socket, "run.cancelled", run_id), 20)
        elapsed = time.monotonic() - asked
    assert llm.closed.is_set()  # the model stream itself was closed
    return elapsed


# -- cancels ---------------------------------------------------------------------


async def test_a_cancel_reaches_a_run_between_tokens_on_every_master(
    cluster_backend: Backend, redis_cluster: Cluster, settings: Settings
) -> None:
    llm = GatedLLM()
    async with running_system(cluster_backend, long_lease(settings), llm=llm) as system:
        taken = [
            await cancel_between_tokens(system, llm, thread_id)
            for thread_id in await threads_on_every_master(system, redis_cluster)
        ]
    assert max(taken) < CANCEL_WITHIN_S, f"cancels took {taken} s"


async def test_the_cancel_listener_follows_a_partition_whose_slot_moved(
    own_cluster: Cluster, settings: Settings
) -> None:
    backend = Backend.connect(own_cluster.url)
    llm = GatedLLM()
    try:
        async with running_system(backend, long_lease(settings), llm=llm) as system:
            thread_id = await system.new_thread()
            channel = system.runtime.store.keys.partition(thread_id).cancels
            source = own_cluster.master_of(channel)
            await until(lambda: subscribed(source, channel), within=20)
            target = another_master(own_cluster, source)

            move_slot(own_cluster, key_slot(channel.encode()), source, target)

            # The node gave the channel up (sunsubscribe); the worker listens on its new one.
            await until(lambda: subscribed(target, channel), within=20)
            assert not await subscribed(source, channel)
            taken = await cancel_between_tokens(system, llm, thread_id)
    finally:
        await backend.close()
    assert taken < CANCEL_WITHIN_S, f"the cancel took {taken:.2f} s"


async def test_the_cancel_listener_follows_a_failover_after_a_kill_9(
    own_cluster: Cluster, settings: Settings
) -> None:
    backend = Backend.connect(own_cluster.url)
    llm = GatedLLM()
    try:
        async with running_system(backend, long_lease(settings), llm=llm) as system:
            thread_id = await system.new_thread()
            channel = system.runtime.store.keys.partition(thread_id).cancels
            killed = own_cluster.master_of(channel)
            await until(lambda: subscribed(killed, channel), within=20)

            killed.kill()
            await asyncio.to_thread(own_cluster.wait_healthy)  # its replica took over
            promoted = own_cluster.master_of(channel)
            assert promoted.port != killed.port

            await until(lambda: subscribed(promoted, channel), within=30)
            taken = await cancel_between_tokens(system, llm, thread_id)
    finally:
        await backend.close()
    assert taken < CANCEL_WITHIN_S, f"the cancel took {taken:.2f} s"


# -- scripts ---------------------------------------------------------------------


async def test_the_scripts_work_on_the_cluster(
    cluster_backend: Backend, settings: Settings
) -> None:
    """What tests/test_script_keys.py watches on one Redis: lanes, queues, interrupts, a
    holder from before lanes (the store calls the append script again when it names a
    run's hash it was not given), due timers, leases, work given back, consumers
    forgotten, users, schedules and the retention backfill, on partitions of every master."""
    store = EventStore(cluster_backend, Keyspace(settings.partitions))
    for _ in range(3):
        await lanes_and_queues(store)
    await due_timers(store, cluster_backend, settings)
    await the_other_scripts(store, cluster_backend, settings)


async def test_due_timers_on_every_master_fire_once(
    cluster_backend: Backend, redis_cluster: Cluster, settings: Settings
) -> None:
    """The worker reads every partition's due timers in one pipeline the cluster client
    splits by node (the time is a call of its own: a cluster pipeline refuses TIME)."""
    store = EventStore(cluster_backend, Keyspace(settings.partitions))
    runs: dict[str, str] = {}
    wanted = masters_of_partitions(redis_cluster, store.keys)
    covered: set[int] = set()
    while covered != wanted:
        assert len(runs) < MAX_THREADS, f"no thread landed on masters {wanted - covered}"
        thread_id, _ = await commands.create_thread(store)
        run_id = (await commands.send_message(store, thread_id, "later", "writer")).run_id
        part = store.keys.partition(thread_id)
        await store.redis.hset(part.run(run_id), "status", "waiting")
        await store.redis.zadd(part.timers, {run_id: 0})
        runs[run_id] = thread_id
        covered.add(redis_cluster.master_of(part.timers).port)
    workers = [Worker(cluster_backend, store, ScriptedLLM(), settings) for _ in range(2)]
    await asyncio.gather(*(worker._fire_due_timers() for worker in workers))
    assert sum(worker.stats["timers_fired"] for worker in workers) == len(runs)
    for run_id, thread_id in runs.items():
        assert (await store.run_state(run_id, thread_id))["status"] == "queued"


async def test_a_timer_due_while_its_slot_moves_fires_once_the_slot_has_moved(
    own_cluster: Cluster, settings: Settings
) -> None:
    """The run's hash has moved to the new node, the timers not yet. Firing the timer on
    the old node would take it off the timers and then fail on the run's hash, losing
    the wake-up; given in KEYS, the hash that has moved makes the call TRYAGAIN whole."""
    backend = Backend.connect(own_cluster.url)
    try:
        store = EventStore(backend, Keyspace(settings.partitions))
        thread_id, _ = await commands.create_thread(store)
        run_id = (await commands.send_message(store, thread_id, "later", "writer")).run_id
        part = store.keys.partition(thread_id)
        await store.redis.hset(part.run(run_id), "status", "waiting")
        await store.redis.zadd(part.timers, {run_id: 0})
        slot = key_slot(part.timers.encode())
        source = own_cluster.master_of(part.timers)
        target = another_master(own_cluster, source)
        worker = Worker(backend, store, ScriptedLLM(), settings)

        begin_move(slot, source, target)
        migrate(source, target, [part.run(run_id)])
        with contextlib.suppress(RedisError):  # TRYAGAIN, for as long as the move lasts
            await worker._fire_due_timers()
        assert worker.stats["timers_fired"] == 0
        assert await store.redis.zscore(part.timers, run_id) == 0  # still due

        await asyncio.to_thread(finish_move, own_cluster, slot, source, target)
        await worker._fire_due_timers()

        assert worker.stats["timers_fired"] == 1
        assert (await store.run_state(run_id, thread_id))["status"] == "queued"
        work = as_entries(await store.redis.xrange(part.work))
        assert [f["run"] for _, f in work if f["run"] == run_id] == [run_id] * 2  # sent, woken
    finally:
        await backend.close()
