"""Transactions, pipelines, scripts and partitions on a real Redis Cluster (3 masters,
3 replicas): each MULTI names one slot's keys and runs on that slot's master, scripts
in pipelines survive a node that lacks them, and the partition count is the one the
deployment recorded."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from consumers import status
from consumers.llm.scripted import ScriptedLLM
from consumers.runner import WorkItem
from consumers.schedules import Schedule, Schedules
from consumers.worker import UNDELIVERABLE_MARGIN, Worker
from projections import run_index
from projections.search import Search, query_words
from projections.views import ViewStore
from service import access, commands, users_cli
from service.auth import Caller
from service.deletion import Deleter
from service.limits import LimitReached
from service.runtime import Runtime
from slipstream import events as ev
from slipstream import partitions, retention
from slipstream.backend import Backend, as_entries, as_stream_reply
from slipstream.config import Settings
from slipstream.errors import ConfigError
from slipstream.keys import WORKER_REGISTRY, WORKERS_GROUP, Keyspace, Partition, thread_of_run
from slipstream.registry import forget_dead_consumers, register
from slipstream.store import Append, EventStore
from slipstream.users import Users
from tests.ports import free_port
from tests.processes import (
    ROOT,
    env_for,
    exits_within,
    processes,
    redis_process,
    spawn,
    wait_for_log,
)
from tests.redis_cluster import Cluster, Node

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


async def threads_on_every_master(store: EventStore, redis_cluster: Cluster) -> list[str]:
    """New threads until every master holds at least one."""
    made: list[str] = []
    while len(masters_of(redis_cluster, [store.stream_key(t) for t in made])) < 3:
        thread_id, _ = await commands.create_thread(store, f"zebra {len(made)}")
        made.append(thread_id)
    return made


def forget_scripts(nodes: list[Node]) -> None:
    """What a fresh cluster, or a replica just promoted, holds: no script at all."""
    for node in nodes:
        with node.client() as client:
            client.script_flush()


def fail_over(redis_cluster: Cluster, key: str) -> Node:
    """A replica of `key`'s master takes over (CLUSTER FAILOVER, once it is in sync: no
    write is lost); the new master."""
    old = redis_cluster.master_of(key)
    with old.client() as client:
        lines = client.execute_command(
            "CLUSTER", "REPLICAS", client.execute_command("CLUSTER", "MYID")
        )
    port = int(str(lines[0]).split()[1].split("@")[0].rsplit(":", 1)[1])
    replica = next(node for node in redis_cluster.nodes if node.port == port)

    def replica_in_sync() -> bool:
        with replica.client() as client:
            role = client.execute_command("ROLE")
        return bool(role[0] == "slave" and role[3] == "connected")

    def promoted() -> bool:
        return redis_cluster.master_of(key).port == port

    holds_within(replica_in_sync, 30)
    with replica.client() as client:
        client.execute_command("CLUSTER", "FAILOVER")
    holds_within(promoted, 30)
    redis_cluster.wait_healthy()
    return replica


def holds_within(condition: Callable[[], bool], seconds: float) -> None:
    """Wait for a condition of the cluster's nodes (they are asked synchronously)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{condition.__name__} did not hold"
        time.sleep(0.02)


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


# Scripts in pipelines (slipstream/scripts.py)


async def test_search_on_nodes_that_never_saw_its_scripts(
    store: EventStore, redis_cluster: Cluster
) -> None:
    made = await threads_on_every_master(store, redis_cluster)
    views = ViewStore(store)
    for thread_id in made:
        assert await views.reindex(thread_id)
    forget_scripts(redis_cluster.live_nodes())  # search.lua is only ever called pipelined
    search = Search(store.redis, store.keys)
    words = query_words("zebra")
    matches = await search.matches(words, user=None, limit=50)
    assert {m.thread_id for m in matches} == set(made)
    forget_scripts(redis_cluster.live_nodes())
    hits = await search.hits(matches, words)
    assert {hit.id for hit in hits} == set(made)
    assert all(hit.snippet and "zebra" in hit.snippet for hit in hits)


def renames(threads: list[str], title: str) -> list[Append]:
    return [Append(t, [ev.ThreadRenamed(title=title)]) for t in threads]


async def titles(store: EventStore, thread_id: str) -> list[str]:
    return [
        s.event.title for s in await store.read(thread_id) if isinstance(s.event, ev.ThreadRenamed)
    ]


async def test_pipelined_appends_reach_nodes_without_the_script_once_each(
    store: EventStore, redis_cluster: Cluster
) -> None:
    made = await threads_on_every_master(store, redis_cluster)
    # One master lacks the script, the others hold it: only its calls are sent again.
    one = redis_cluster.master_of(store.stream_key(made[0]))
    forget_scripts([one])
    results = await store.append_many(renames(made, "first"))
    assert all(not isinstance(r, Exception) and not r.duplicate for r in results)
    forget_scripts(redis_cluster.live_nodes())
    results = await store.append_many(renames(made, "second"))
    assert all(not isinstance(r, Exception) for r in results)
    for thread_id in made:
        assert await titles(store, thread_id) == ["first", "second"]  # each written once


async def test_scripts_after_a_failover_to_a_replica_without_them(
    store: EventStore, redis_cluster: Cluster
) -> None:
    made = await threads_on_every_master(store, redis_cluster)
    await store.append_many(renames(made, "before"))  # every primary holds the script now
    promoted = fail_over(redis_cluster, store.stream_key(made[0]))
    with promoted.client() as client:
        assert client.script_exists(store._append.sha) == [False]  # replicas keep no scripts
    on_it = [t for t in made if redis_cluster.master_of(store.stream_key(t)) == promoted]
    results = await store.append_many(renames(made, "pipelined"))
    assert all(not isinstance(r, Exception) for r in results)
    forget_scripts([promoted])
    # A call on its own: redis-py loads the script (on every primary) and calls again.
    await store.append(Append(on_it[0], [ev.ThreadRenamed(title="alone")]))
    assert await titles(store, on_it[0]) == ["before", "pipelined", "alone"]


# Other commands that could span slots


async def test_dead_consumers_are_forgotten_by_the_registrys_clock(
    store: EventStore, redis_cluster: Cluster
) -> None:
    redis = store.redis
    streams = [part.work for part in store.keys.all()]
    assert len(masters_of(redis_cluster, streams)) == 3  # the registry's node is one of them
    await register(redis, WORKER_REGISTRY, "alive")
    await redis.zadd(WORKER_REGISTRY, {"long-gone": 1})  # seen in 1970
    for stream in streams:
        await redis.xgroup_create(stream, WORKERS_GROUP, id="0", mkstream=True)
        for consumer in ("alive", "long-gone", "me"):
            await redis.xgroup_createconsumer(stream, WORKERS_GROUP, consumer)
    forgotten = await forget_dead_consumers(redis, WORKER_REGISTRY, streams, WORKERS_GROUP, "me")
    assert forgotten == len(streams)
    for stream in streams:
        names = {str(c["name"]) for c in await redis.xinfo_consumers(stream, WORKERS_GROUP)}
        assert names == {"alive", "me"}
    assert await redis.zrange(WORKER_REGISTRY, 0, -1) == ["alive"]


async def test_reads_that_span_partitions_on_every_master(
    cluster: Backend, settings: Settings, redis_cluster: Cluster
) -> None:
    tokens = dataclasses.replace(settings, auth="tokens")
    rt = Runtime.build(tokens, cluster)
    store = rt.store
    made: list[str] = []
    runs: list[str] = []
    while len(masters_of(redis_cluster, [store.stream_key(t) for t in made])) < 3:
        thread_id, _ = await commands.create_thread(store, f"zebra {len(made)}", owner="ada")
        runs.append((await commands.send_message(store, thread_id, "hi", "assistant")).run_id)
        assert await rt.views.reindex(thread_id)
        made.append(thread_id)
    assert {s.id for s in await rt.views.summaries(50)} == set(made)
    assert {s.id for s in await rt.views.summaries_of(made, 50)} == set(made)
    assert await access.visible_threads(rt, Caller("ada", "token")) == set(made)
    listed = await run_index.page(
        cluster.client, store.keys.all(), status=None, agent=None, limit=50, before=None
    )
    assert {r.id for r in listed.runs} == set(runs)
    await rt.limits.add_runs("ada", runs)
    limited = dataclasses.replace(rt.limits, settings=dataclasses.replace(tokens, runs_per_user=3))
    with pytest.raises(LimitReached):  # every run queued, read from each one's partition
        await limited.check_runs(
            "ada", lambda run_id: store.keys.partition(thread_of_run(run_id) or "").run(run_id)
        )
    # Keys of every node are scanned (SCAN of each primary) and each is given its lifetime.
    for thread_id in made:
        await cluster.client.set(store.keys.partition(thread_id).dedupe(f"old-{thread_id}"), "kept")
    done = await retention.backfill(cluster, settings)
    assert done["dedupe keys"] == len(made)


# Partitions: recorded once, checked by every process, shown per node


async def test_the_first_start_records_the_partition_count_and_others_must_match(
    backend: Backend,
) -> None:
    redis = backend.client
    await partitions.check(redis, 8, record=False)  # a tool that only looks writes nothing
    assert await partitions.recorded(redis) is None
    await partitions.check(redis, 8)
    await partitions.check(redis, 8)
    assert await partitions.recorded(redis) == 8
    assert await redis.ttl(partitions.KEY) == -1  # one small key for the deployment's life
    with pytest.raises(partitions.PartitionsDiffer) as refused:
        await partitions.check(redis, 16)
    assert "SLIPSTREAM_PARTITIONS=16" in str(refused.value)
    assert "in 8 partitions" in str(refused.value)
    assert await partitions.recorded(redis) == 8


@pytest.mark.parametrize(
    ("value", "error"),
    [("0", "must be at least 1"), ("1025", "must be at most 1024"), ("-3", "at least 1")],
)
def test_the_partition_count_is_bounded(value: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        Settings.from_env({"SLIPSTREAM_PARTITIONS": value})
    assert Settings.from_env({"SLIPSTREAM_PARTITIONS": "1024"}).partitions == 1024
    # Tags stay distinct past two digits: {p10} and {p100} are different slots' tags.
    assert {Partition(n).tag for n in range(1024)} == {f"{{p{n:02d}}}" for n in range(1024)}


def test_a_worker_with_another_partition_count_refuses_to_start(
    cluster_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with processes() as running:
        first = spawn("consumers", env_for(REDIS_URL=cluster_url), tmp_path / "first.log")
        running.append(first)
        wait_for_log(tmp_path / "first.log", "taking work from", first)
        other = spawn("consumers", env_for(REDIS_URL=cluster_url, SLIPSTREAM_PARTITIONS="8"), log)
        running.append(other)
        assert exits_within(other, 30) == 1
    assert log.read_text().splitlines()[-1] == (
        "worker: SLIPSTREAM_PARTITIONS=8, but this deployment's Redis holds its threads in 4 "
        "partitions (ss:partitions, recorded by its first start). A thread's partition follows "
        "from that number, so with another one every thread would be looked for in the wrong "
        "place. Set SLIPSTREAM_PARTITIONS=4, or start a new deployment on an empty Redis for 8."
    )


def test_a_role_started_before_its_redis_checks_the_count_once_it_answers(
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "projector.log"
    with processes() as running:
        projector = spawn("projections", env_for(REDIS_URL=f"redis://127.0.0.1:{port}/0"), log)
        running.append(projector)
        wait_for_log(log, "cannot check the partition count with Redis yet", projector)
        with redis_process(tmp_path / "redis", port):
            wait_for_log(log, "Redis answers; partitions checked", projector)
            with SyncRedis(port=port, decode_responses=True) as client:
                assert client.get(partitions.KEY) == "4"


async def test_status_shows_which_node_serves_each_partition(
    cluster: Backend, settings: Settings, redis_cluster: Cluster, cluster_url: str
) -> None:
    keyspace = Keyspace(settings.partitions)
    await partitions.check(cluster.client, settings.partitions)
    seen = await status.gather(cluster, keyspace)
    assert seen.nodes is not None and seen.recorded == settings.partitions
    masters = [n for n in seen.nodes if n.role == "master"]
    replicas = [n for n in seen.nodes if n.role == "replica"]
    assert len(masters) == 3 and len(replicas) == 3
    for part, row in zip(keyspace.all(), seen.partitions, strict=True):
        assert row.master == f"127.0.0.1:{redis_cluster.master_of(part.work).port}"
    assert sorted(n for m in masters for n in m.partitions) == list(range(settings.partitions))
    for replica in replicas:  # a copy of its master's partitions
        assert (
            replica.partitions == next(m for m in masters if m.address == replica.master).partitions
        )
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumers",
        "status",
        cwd=ROOT,
        env=env_for(REDIS_URL=cluster_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await command.communicate()
    assert command.returncode == 0, err.decode()
    text = out.decode()
    assert "Redis Cluster (redis+cluster://" in text and "3 masters, 3 replicas" in text
    for node in seen.nodes:
        line = next(line for line in text.splitlines() if line.strip().startswith(node.address))
        assert ("replica of " in line) == (node.role == "replica")
        assert f"{len(node.partitions)} partitions" in line


async def test_status_on_one_redis_says_so(real_backend: Backend, settings: Settings) -> None:
    seen = await status.gather(real_backend, Keyspace(settings.partitions))
    assert seen.nodes is None and seen.recorded is None
    text = status.render(seen)
    assert "partitions: 4 (none recorded yet)" in text
    assert "one Redis (redis://" in text and "every partition is on it" in text
