"""Transactions, pipelines, scripts and partitions on a real Redis Cluster (3 masters,
3 replicas): each MULTI names one slot's keys and runs on that slot's master, scripts
in pipelines survive a node that lacks them, and the partition count is the one the
deployment recorded."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from consumers.llm.scripted import ScriptedLLM
from consumers.runner import WorkItem
from consumers.schedules import Schedule, Schedules
from consumers.worker import UNDELIVERABLE_MARGIN, Worker
from projections.views import ViewStore
from service import commands, users_cli
from service.deletion import Deleter
from slipstream.backend import Backend, as_entries, as_stream_reply
from slipstream.config import Settings
from slipstream.keys import WORKERS_GROUP
from slipstream.store import EventStore
from slipstream.users import Users
from tests.redis_cluster import Cluster

pytestmark = pytest.mark.slow


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[Backend]:
    made = Backend.connect(cluster_url)
    yield made
    await made.close()


@pytest.fixture
def store(cluster: Backend, settings: Settings) -> EventStore:
    return EventStore.from_settings(cluster, settings)


def masters_of(redis_cluster: Cluster, keys: list[str]) -> set[int]:
    return {redis_cluster.master_of(key).port for key in keys}


# MULTI on one slot's master (backend.pipeline_for)


async def test_users_and_sessions_on_a_cluster(cluster: Backend, cluster_url: str) -> None:
    users = Users(cluster)
    token = await users.add("ada")
    session = await users.start_session("ada", 60)  # its MULTI: two keys of `{auth}`
    assert await users.by_token(token) == "ada"
    assert await users.by_session(session) == "ada"
    assert await cluster.client.ttl("ss:{auth}:sessions:ada") > 0
    revoked = await users.revoke("ada")
    assert (revoked.tokens, revoked.sessions) == (1, 1)
    assert await users.by_session(session) is None
    # `python -m service users` takes the cluster URL as every role does.
    assert await users_cli._run(cluster_url, "add", "grace") == 0
    assert await users.exists("grace")


async def test_schedules_on_a_cluster(store: EventStore) -> None:
    schedules = Schedules(store)  # now by the cluster's clock (TIME of a node)
    put = await schedules.put(Schedule(name="hourly", workflow="research", every_s=3600))
    assert put.next_ms is not None
    got = await schedules.get("hourly")
    assert got is not None and got.next_ms == put.next_ms
    assert [s.schedule.name for s in await schedules.all()] == ["hourly"]
    assert await schedules.delete("hourly")
    assert await schedules.get("hourly") is None
    assert not await schedules.delete("hourly")


async def test_a_view_is_read_and_a_thread_deleted_on_each_master(
    store: EventStore, redis_cluster: Cluster
) -> None:
    views = ViewStore(store)
    made: list[str] = []
    # Threads until every master holds one: each read and delete runs on its own node.
    while len(masters_of(redis_cluster, [store.stream_key(t) for t in made])) < 3:
        thread_id, _ = await commands.create_thread(store)
        await commands.send_message(store, thread_id, "hello", "assistant")
        made.append(thread_id)
    for thread_id in made:
        assert await views.reindex(thread_id)  # reads, folds and saves view and index
        snapshot = await views.read(thread_id)  # the MULTI of the view and its index version
        assert not snapshot.rebuild and not snapshot.index_stale
        assert snapshot.view.messages[0].content == "hello"
    deleter = Deleter(store, views)
    for thread_id in made:
        assert await deleter.delete(thread_id)
        assert not await store.exists(thread_id)
        assert not await deleter.delete(thread_id)


async def test_an_undeliverable_item_is_dead_lettered_on_its_partitions_master(
    store: EventStore, settings: Settings
) -> None:
    quick = dataclasses.replace(settings, max_attempts=1)
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "doomed", "assistant")
    part = store.keys.partition(thread_id)
    redis = store.redis
    await redis.xgroup_create(part.work, WORKERS_GROUP, id="0", mkstream=True)
    reply = as_stream_reply(await redis.xreadgroup(WORKERS_GROUP, "w1", {part.work: ">"}, count=1))
    entry_id = reply[0][1][0][0]
    for _ in range(quick.max_attempts + UNDELIVERABLE_MARGIN):  # delivered again and again
        await redis.xclaim(part.work, WORKERS_GROUP, "w1", 0, [entry_id])
    worker = Worker(store.backend, store, ScriptedLLM(), quick)
    item = WorkItem(part.work, entry_id, sent.run_id, thread_id)
    assert await worker._unless_undeliverable(part, [item]) == []
    dead = as_entries(await redis.xrange(part.dead))
    assert [fields["run"] for _, fields in dead] == [sent.run_id]
    assert await redis.xlen(part.work) == 0
    assert (await redis.xpending(part.work, WORKERS_GROUP))["pending"] == 0
