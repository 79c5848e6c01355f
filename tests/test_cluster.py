"""The whole system on a real Redis Cluster of 3 masters and 3 replicas.

The core scenarios of the single-Redis suite, run again on the session's
cluster (tests/redis_cluster.py): sockets, cancel, workflows, schedules,
real processes with a worker killed mid-answer; and the replica wait of the
appends that answer a promise (slipstream/replicas.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect

import tests.test_workflows  # noqa: F401  (registers test_short_sleep, a workflow of 0.3 s)
from consumers.llm.scripted import scripted_reply
from consumers.schedules import Schedule
from service import commands
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ConfigError
from slipstream.store import EventStore
from tests import test_run_faults as faults
from tests.conftest import TEST_ENV
from tests.harness import System, frames_until, run_of, running_system, wait_status
from tests.redis_cluster import Cluster
from tests.waits import until


@pytest.fixture
async def cluster_backend(cluster_url: str) -> AsyncIterator[Backend]:
    backend = Backend.connect(cluster_url)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def cluster_system(cluster_backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(cluster_backend, settings) as system:
        yield system


@pytest.fixture
async def slow_system(cluster_backend: Backend, settings: Settings) -> AsyncIterator[System]:
    """Answers of 60 words, 5 ms apart, flushed every 10 ms: a second or so of deltas."""
    slow = dataclasses.replace(settings, scripted_delay_ms=5, scripted_words=60, flush_ms=10)
    async with running_system(cluster_backend, slow) as system:
        yield system


def texts(frames: list[dict]) -> str:  # type: ignore[type-arg]
    return "".join(
        f["event"]["text"] for f in frames if f.get("event", {}).get("type") == "message.delta"
    )


async def test_an_answer_on_the_cluster(cluster_system: System, settings: Settings) -> None:
    thread_id = await cluster_system.new_thread()
    sent = await cluster_system.send(thread_id, "hello cluster")
    view = await cluster_system.wait_for_run(thread_id, sent["run_id"])
    assert view["runs"][sent["run_id"]]["status"] == "completed"
    assert view["messages"][-1]["content"] == scripted_reply("hello cluster", 40)
    health = (await cluster_system.http.get("/healthz")).json()
    assert health["status"] == "ok" and health["replica_wait"]["replicas"] == 1


async def test_threads_of_every_partition_answer(cluster_system: System) -> None:
    """Threads land on all three masters; each is answered."""
    store = cluster_system.runtime.store
    threads: dict[int, str] = {}
    while len(threads) < store.keys.partitions:
        thread_id = await cluster_system.new_thread()
        threads.setdefault(store.keys.partition(thread_id).number, thread_id)
    sent = {
        t: (await cluster_system.send(t, f"partition of {t}"))["run_id"] for t in threads.values()
    }
    for thread_id, run_id in sent.items():
        view = await cluster_system.wait_for_run(thread_id, run_id)
        assert view["messages"][-1]["content"] == scripted_reply(f"partition of {thread_id}", 40)


async def test_two_sockets_on_one_thread_see_the_same_answer(slow_system: System) -> None:
    thread_id = await slow_system.new_thread()
    async with (
        connect(slow_system.ws_url(thread_id)) as one,
        connect(slow_system.ws_url(thread_id)) as two,
    ):
        assert orjson.loads(await one.recv())["type"] == "snapshot"
        assert orjson.loads(await two.recv())["type"] == "snapshot"
        accepted = await slow_system.send(thread_id, "share this")
        seen_one = await frames_until(one, "run.completed")
        seen_two = await frames_until(two, "run.completed")
    events_one = [f for f in seen_one if f["type"] == "event"]
    assert events_one == [f for f in seen_two if f["type"] == "event"]
    assert texts(events_one) == scripted_reply("share this", 60)
    ids = [tuple(map(int, f["id"].split("-"))) for f in events_one]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events_one[0]["event"]["run_id"] == accepted["run_id"]


async def test_a_streaming_answer_is_stopped(cluster_backend: Backend, settings: Settings) -> None:
    """The cancel reaches the worker on the partition's node and ends the stream at once."""
    slow = dataclasses.replace(settings, scripted_delay_ms=50, scripted_words=400, flush_ms=10)
    async with running_system(cluster_backend, slow) as system:
        thread_id = await system.new_thread()
        async with connect(system.ws_url(thread_id)) as socket:
            accepted = await system.send(thread_id, "a long answer")
            run_id = accepted["run_id"]
            await frames_until(socket, "message.delta", run_id)
            asked = time.monotonic()
            response = await system.http.post(f"/api/runs/{run_id}/cancel")
            assert response.status_code == 202, response.text
            assert response.json()["status"] == "cancel_requested"
            frames = await frames_until(socket, "run.cancelled", run_id)
            stopped_s = time.monotonic() - asked
        run = await run_of(system, thread_id, run_id)
        view = await system.view(thread_id)
        reply = next(m for m in view["messages"] if m["id"] == run["reply_id"])
    assert run["status"] == "cancelled" and reply["status"] == "cancelled"
    full = scripted_reply("a long answer", 400)
    assert reply["content"] and full.startswith(reply["content"]) and reply["content"] != full
    late = [f for f in frames if f.get("event", {}).get("type") == "message.completed"]
    assert late == []
    assert stopped_s < 1.0, f"the cancel took {stopped_s:.2f} s to stop the stream"


async def test_a_workflow_waits_for_its_signal(cluster_system: System) -> None:
    thread_id = await cluster_system.new_thread()
    accepted = await cluster_system.send(thread_id, "Announce the release", agent="approval")
    run_id = accepted["run_id"]
    run = await wait_status(cluster_system, thread_id, run_id, "waiting")
    assert run["waiting_for"] == "approval"
    approved = await cluster_system.http.post(
        f"/api/runs/{run_id}/signal", json={"name": "approval", "payload": {"approved": True}}
    )
    assert approved.status_code == 202, approved.text
    run = await wait_status(cluster_system, thread_id, run_id, "completed")
    assert run["result"]["status"] == "published"
    assert [s["name"] for s in run["steps"]] == ["draft", "wait:approval", "publish"]


async def test_a_durable_sleep_wakes_on_its_timer(cluster_system: System) -> None:
    thread_id = await cluster_system.new_thread()
    accepted = await cluster_system.send(thread_id, "nap", agent="test_short_sleep")
    run = await wait_status(cluster_system, thread_id, accepted["run_id"], "completed")
    assert run["result"] == "awake"
    events = await cluster_system.runtime.store.read(thread_id)
    waited = next(s.event for s in events if s.event.type == "run.waiting")
    resumed = next(s for s in events if s.event.type == "run.resumed")
    assert isinstance(waited, ev.RunWaiting) and waited.until_ms is not None
    late_ms = int(resumed.id.split("-")[0]) - waited.until_ms
    assert 0 <= late_ms < 1000  # woken by the timer on the partition's node, on time


async def test_a_schedule_fires_on_the_cluster(
    cluster_backend: Backend, settings: Settings
) -> None:
    every_second = dataclasses.replace(settings, min_schedule_interval_s=1)
    async with running_system(cluster_backend, every_second) as system:
        body = {"name": "tick", "workflow": "research", "every_s": 1, "input": "what changed?"}
        made = await system.http.put("/api/schedules/tick", json=body)
        assert made.status_code == 200, made.text
        thread_id = Schedule.model_validate(made.json()["schedule"]).thread_id

        async def answered() -> bool:
            response = await system.http.get(f"/api/threads/{thread_id}")
            if response.status_code != 200:
                return False
            runs = response.json()["runs"].values()
            return any(r["status"] == "completed" for r in runs)

        await until(answered, within=20)
        assert (await system.http.delete("/api/schedules/tick")).status_code == 204
        view = await system.view(thread_id)
    sent = [m for m in view["messages"] if m["role"] == "user"]
    assert sent and all(m["content"] == "what changed?" for m in sent)
    assert any(m["agent"] == "research" and m["status"] == "completed" for m in view["messages"])


# The replica wait of promised appends (slipstream/replicas.py).


@pytest.fixture
async def cluster_store(cluster_backend: Backend, settings: Settings) -> EventStore:
    return EventStore.from_settings(cluster_backend, settings)


def replica_of(cluster: Cluster, key: str) -> tuple[str, int]:
    master = cluster.master_of(key)
    replicas = cluster.replicas_of(master)
    assert len(replicas) == 1, "the fixture gives each master one replica"
    return "127.0.0.1", replicas[0].port


async def test_a_sent_message_is_on_the_replica_before_its_append_returns(
    cluster_store: EventStore, redis_cluster: Cluster
) -> None:
    assert cluster_store.replica_wait.replicas == 1  # the default on a cluster
    thread_id, _ = await commands.create_thread(cluster_store)
    key = cluster_store.stream_key(thread_id)
    master = redis_cluster.master_of(key)
    replica = redis_cluster.replicas_of(master)[0]
    for n in range(20):
        sent = await commands.send_message(cluster_store, thread_id, f"keep {n}", "assistant")
        with replica.client() as client:
            client.execute_command("READONLY")
            ids = [entry_id for entry_id, _ in client.xrange(key, min=sent.event_id)]
        waited = cluster_store.replica_wait
        assert ids and ids[0] == sent.event_id, f"message {n} was not on the replica yet ({waited})"
    assert (cluster_store.replica_wait.short, cluster_store.replica_wait.unwaited) == (0, 0)


async def test_a_lagging_replica_leaves_the_write_standing_counted_and_said_once(
    cluster_backend: Backend,
    settings: Settings,
    redis_cluster: Cluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = EventStore.from_settings(cluster_backend, dataclasses.replace(settings, wait_ms=50))
    store.replica_wait.probe_s = 0.2  # not the second of a deployment: the test ends sooner
    thread_id, _ = await commands.create_thread(store)
    key = store.stream_key(thread_id)
    replica = redis_cluster.replicas_of(redis_cluster.master_of(key))[0]
    caplog.set_level(logging.INFO, logger="slipstream.replicas")
    replica.pause()
    try:
        took = []
        for n in range(3):
            began = time.monotonic()
            sent = await commands.send_message(store, thread_id, f"unconfirmed {n}", "assistant")
            took.append(time.monotonic() - began)
            assert not sent.duplicate
    finally:
        replica.resume()
    # The first waited the whole 50 ms; the outage known, the next skip the wait (one a
    # second probes), all three unconfirmed.
    assert (store.replica_wait.short, store.replica_wait.timed_out) == (3, 1)
    assert 0.05 <= took[0] < 0.5, took
    said = [r.getMessage() for r in caplog.records if r.name == "slipstream.replicas"]
    assert len([m for m in said if "replicas acknowledged" in m]) == 1, said
    # The writes stood; once the replica has caught up, the next one is confirmed again.
    events = await store.read(thread_id)
    assert [s.event.content for s in events if s.event.type == "message.sent"] == [  # type: ignore[union-attr]
        f"unconfirmed {n}" for n in range(3)
    ]

    async def confirmed() -> bool:
        await commands.send_message(store, thread_id, "again", "assistant")
        return store.replica_wait.outages == []

    await until(confirmed, within=10)
    assert any("acknowledge writes again" in r.getMessage() for r in caplog.records)


# Real processes: `python -m service` (web), `python -m projections`, `python -m consumers`.


@pytest.fixture
def processes(cluster_url: str, tmp_path: Path) -> Iterator[faults.Cluster]:
    made = faults.Cluster(cluster_url, tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_kill_9_a_worker_mid_answer_on_the_cluster(processes: faults.Cluster) -> None:
    processes.start(workers=2)
    threads = [processes.thread() for _ in range(6)]
    prompts: dict[str, dict[str, str]] = {t: {} for t in threads}
    for i in range(12):
        thread_id = threads[i % len(threads)]
        content = f"question {i}"
        prompts[thread_id][processes.ask(thread_id, content)] = content
    first_thread, first_run = threads[0], next(iter(prompts[threads[0]]))
    victim = faults.wait_for(lambda: processes.running_on(first_thread, first_run))
    os.kill(faults.pid_of(victim), signal.SIGKILL)
    processes.wait_runs_over(threads, 12, within=60)
    totals: Counter[str] = Counter()
    for thread_id in threads:
        totals += faults.check_thread(processes, thread_id, prompts[thread_id])
    assert totals == Counter(completed=12)
    attempts = [e["attempt"] for e in processes.events(first_thread) if e["type"] == "run.started"]
    assert 2 in attempts, "the killed worker's run was not taken over"


def test_the_replica_wait_settings() -> None:
    unset = Settings.from_env(TEST_ENV)
    assert (unset.replicas_to_wait(cluster=True), unset.replicas_to_wait(cluster=False)) == (1, 0)
    off = Settings.from_env(TEST_ENV | {"SLIPSTREAM_WAIT_REPLICAS": "0"})
    assert off.replicas_to_wait(cluster=True) == 0
    two = Settings.from_env(
        TEST_ENV | {"SLIPSTREAM_WAIT_REPLICAS": "2", "SLIPSTREAM_WAIT_MS": "50"}
    )
    assert (two.replicas_to_wait(cluster=False), two.wait_ms) == (2, 50)
    with pytest.raises(ConfigError, match="SLIPSTREAM_WAIT_MS=750 must be below"):
        Settings.from_env(TEST_ENV | {"SLIPSTREAM_WAIT_MS": "750"})
