"""The live path on a real Redis that fails: tails ride out outages, sockets wait or retry.

An outage of the web process alone is made with an ACL user: the web (or the
hub) connects as `tail`, and switching that user off and killing its
connections cuts it from Redis while the test, as the default user, keeps
writing. Switching it on again ends the outage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from consumers.llm.scripted import scripted_reply
from service import live
from service.live import MISSED, Hub, Subscription
from service.websocket import CLOSE_TOO_SLOW, CLOSE_TRY_AGAIN
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace
from slipstream.store import Append, EventStore
from slipstream.supervise import Liveness
from slipstream.threads import create_thread
from tests.harness import frames_until, running_system
from tests.ports import free_port
from tests.processes import redis_process
from tests.waits import until

USER, PASSWORD = "tail", "tail-secret"


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{PASSWORD}", "~*")
    await client.execute_command("ACL", "SETUSER", USER, "&*", "+@all")
    try:
        yield client
    finally:
        await client.execute_command("ACL", "DELUSER", USER)
        await client.aclose()


@pytest.fixture
async def cut_backend(redis_url: str, admin: aioredis.Redis) -> AsyncIterator[Backend]:
    """A backend that `cut` separates from Redis and `restore` reconnects."""
    made = Backend.connect(redis_url.replace("redis://", f"redis://{USER}:{PASSWORD}@"))
    yield made
    await made.close()


async def cut(admin: aioredis.Redis) -> None:
    await admin.execute_command("ACL", "SETUSER", USER, "off")
    await admin.execute_command("CLIENT", "KILL", "USER", USER)


async def restore(admin: aioredis.Redis) -> None:
    await admin.execute_command("ACL", "SETUSER", USER, "on")


def tail_name(keys: Keyspace, thread_id: str) -> str:
    return f"live.tail.p{keys.partition(thread_id).number:02d}"


def warnings_of(caplog: pytest.LogCaptureFixture, name: str, says: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "slipstream.live"
        and r.getMessage().startswith(name)
        and says in r.getMessage()
    ]


async def rename(store: EventStore, thread_id: str, title: str) -> str:
    appended = await store.append(Append(thread_id, [ev.ThreadRenamed(title=title)]))
    return appended.ids[0]


async def test_a_tail_rides_out_an_outage_without_gap_duplicate_or_log_flood(
    real_backend: Backend,
    cut_backend: Backend,
    admin: aioredis.Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="slipstream.live")
    keys = Keyspace(settings.partitions)
    store = EventStore(real_backend, keys)
    thread_id, _ = await create_thread(store)
    liveness = Liveness()
    hub = Hub(cut_backend, keys, liveness=liveness)
    name = tail_name(keys, thread_id)
    try:
        subscription = await hub.subscribe(thread_id)
        assert name in liveness.loops

        await cut(admin)

        async def retried() -> bool:
            return hub.tail_stats()[name]["faults"] >= 4

        await until(retried)
        assert liveness.loops[name].failing_since is not None
        ids = [await rename(store, thread_id, f"title {i}") for i in range(5)]
        # Trimming what the tail had already read is no gap.
        await admin.xtrim(keys.partition(thread_id).feed, maxlen=5, approximate=False)
        await restore(admin)

        async def caught_up() -> bool:
            return len(subscription.pending) >= len(ids)

        await until(caught_up)
        assert [entry_id for entry_id, _ in subscription.pending] == ids
        assert not subscription.overflowed
        assert len(warnings_of(caplog, name, "Redis fault")) == 1
        assert len(warnings_of(caplog, name, "working again")) == 1
        assert liveness.loops[name].failing_since is None
        assert hub.tail_stats()[name]["resyncs"] == 0

        await hub.unsubscribe(subscription)
        assert name not in liveness.loops  # a stopped tail is forgotten
    finally:
        await hub.close()


async def test_a_feed_trimmed_past_a_tail_makes_its_sockets_resync(
    real_backend: Backend,
    cut_backend: Backend,
    admin: aioredis.Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="slipstream.live")
    keys = Keyspace(settings.partitions)
    store = EventStore(real_backend, keys)
    thread_id, _ = await create_thread(store)
    hub = Hub(cut_backend, keys)
    name = tail_name(keys, thread_id)
    try:
        subscription = await hub.subscribe(thread_id)
        watcher = await hub.subscribe_threads()
        await cut(admin)

        async def failed() -> bool:
            return hub.tail_stats()[name]["faults"] >= 1

        await until(failed)
        for i in range(5):
            await rename(store, thread_id, f"title {i}")
        await admin.xtrim(keys.partition(thread_id).feed, maxlen=2, approximate=False)
        await restore(admin)

        async def dropped() -> bool:
            return subscription.overflowed

        await until(dropped)
        assert subscription.why == MISSED
        assert not subscription.pending  # nothing past the gap
        assert watcher.reload
        assert hub.tail_stats()[name]["resyncs"] == 1
        assert len(warnings_of(caplog, name, "was trimmed past")) == 1
    finally:
        await hub.close()


async def recv_until(socket: ClientConnection, kind: str) -> list[dict]:  # type: ignore[type-arg]
    """Frames up to and including the first of type `kind`."""
    frames = []
    async with asyncio.timeout(10):
        while True:
            frame = orjson.loads(await socket.recv())
            frames.append(frame)
            if frame["type"] == kind:
                return frames


async def test_sockets_wait_out_an_outage_and_resync_when_the_feed_was_trimmed(
    real_backend: Backend, cut_backend: Backend, admin: aioredis.Redis, settings: Settings
) -> None:
    quick = dataclasses.replace(settings, heartbeat_s=0.05)
    writer = EventStore(real_backend, Keyspace(settings.partitions))
    async with running_system(cut_backend, quick, workers=False) as system:
        thread_id = await system.new_thread()
        lister = await connect(f"ws://127.0.0.1:{system.port}/api/live/threads")
        try:
            assert orjson.loads(await lister.recv())["type"] == "threads"
            async with connect(system.ws_url(thread_id)) as socket:
                snapshot = orjson.loads(await socket.recv())
                await cut(admin)
                # Heartbeats go on while the tail is cut off: the socket just waits.
                assert (await recv_until(socket, "ping"))[-1] == {"type": "ping"}
                ids = [await rename(writer, thread_id, f"title {i}") for i in range(3)]
                feed = Keyspace(settings.partitions).partition(thread_id).feed
                await admin.xtrim(feed, maxlen=1, approximate=False)
                await restore(admin)
                frames = [f for f in await recv_until(socket, "error") if f["type"] != "ping"]
                with pytest.raises(ConnectionClosed) as closed:
                    await socket.recv()
            assert [f["type"] for f in frames] == ["error"]
            assert frames[0]["detail"].startswith(MISSED)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TOO_SLOW
            # As the chat does: resume from the last event it has, from the thread stream.
            async with connect(system.ws_url(thread_id, after=snapshot["last_event_id"])) as again:
                resumed: list[str] = []
                async with asyncio.timeout(10):
                    while len(resumed) < len(ids):
                        frame = orjson.loads(await again.recv())
                        if frame["type"] == "event":
                            resumed.append(frame["id"])
            assert resumed == ids
            # The thread list is sent whole again.
            assert (await recv_until(lister, "threads"))[-1]["type"] == "threads"
        finally:
            await lister.close()


async def test_a_socket_follows_an_answer_through_client_kill(
    real_backend: Backend, admin: aioredis.Redis, settings: Settings
) -> None:
    slow = dataclasses.replace(settings, scripted_delay_ms=10, scripted_words=80, flush_ms=10)
    async with running_system(real_backend, slow) as system:
        thread_id = await system.new_thread()
        async with connect(system.ws_url(thread_id)) as socket:
            snapshot = orjson.loads(await socket.recv())
            accepted = await system.send(thread_id, "through the kill")
            before = await frames_until(socket, "message.delta")
            killed = await admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
            after = await frames_until(socket, "run.completed", accepted["run_id"])
            # The kill reached the tail too, which read on from where it was.
            name = tail_name(system.runtime.hub.keys, thread_id)
            assert system.runtime.hub.tail_stats()[name]["faults"] >= 1
        assert int(killed) >= 1
        stored = (
            await system.http.get(
                f"/api/threads/{thread_id}/events", params={"after": snapshot["last_event_id"]}
            )
        ).json()
    events = [f for f in before + after if f["type"] == "event"]
    # Exactly what the thread stream holds, in its order: no gap, no duplicate.
    assert [f["id"] for f in events] == [e["id"] for e in stored][: len(events)]
    assert events[-1]["event"]["type"] == "run.completed"
    deltas = "".join(f["event"]["text"] for f in events if f["event"]["type"] == "message.delta")
    completed = [f["event"]["text"] for f in events if f["event"]["type"] == "message.completed"]
    assert deltas == completed[-1] == scripted_reply("through the kill", 80)


@pytest.mark.parametrize("path", ["/api/threads/t1234/live", "/api/live/threads"])
async def test_a_handshake_without_redis_is_told_to_try_again(
    settings: Settings, path: str
) -> None:
    nowhere = Backend.connect(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    try:
        async with running_system(nowhere, settings, workers=False) as system:
            started = time.monotonic()
            async with connect(f"ws://127.0.0.1:{system.port}{path}") as socket:
                error = orjson.loads(await socket.recv())
                with pytest.raises(ConnectionClosed) as closed:
                    await socket.recv()
            elapsed = time.monotonic() - started
    finally:
        await nowhere.close()
    assert error == {"type": "error", "detail": "Redis is unavailable: try again later"}
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TRY_AGAIN
    assert elapsed < 2


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A redis-server of this test's own, to pause: (url, pid)."""
    port = free_port()
    with redis_process(tmp_path_factory.mktemp("paused"), port, "--appendonly", "no") as made:
        yield f"redis://127.0.0.1:{port}/0", made.pid


async def test_a_handshake_with_redis_paused_is_told_to_try_again_promptly(
    own_redis: tuple[str, int], settings: Settings
) -> None:
    url, pid = own_redis
    backend = Backend.connect(url)
    try:
        async with running_system(backend, settings, workers=False) as system:
            thread_id = await system.new_thread()
            paths = [f"/api/threads/{thread_id}/live", "/api/live/threads"]
            os.kill(pid, signal.SIGSTOP)
            try:
                for path in paths:
                    started = time.monotonic()
                    async with connect(f"ws://127.0.0.1:{system.port}{path}") as socket:
                        assert orjson.loads(await socket.recv())["type"] == "error"
                        with pytest.raises(ConnectionClosed) as closed:
                            await socket.recv()
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == CLOSE_TRY_AGAIN
                    assert time.monotonic() - started < 2.5
            finally:
                os.kill(pid, signal.SIGCONT)
            async with connect(system.ws_url(thread_id)) as socket:
                assert orjson.loads(await socket.recv())["type"] == "snapshot"
    finally:
        await backend.close()


async def test_an_idle_tail_beats_after_every_empty_read(
    backend: Backend, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "TAIL_BLOCK_MS", 100)
    keys = Keyspace(settings.partitions)
    liveness = Liveness()
    hub = Hub(backend, keys, liveness=liveness)
    try:
        subscription: Subscription = await hub.subscribe("tidle")
        name = tail_name(keys, "tidle")
        first = liveness.loops[name].last_ok

        async def beat_twice() -> bool:
            return liveness.loops[name].last_ok - first > 0.15

        await until(beat_twice)
        assert liveness.down() == {}
        await hub.unsubscribe(subscription)
        assert liveness.loops == {}
    finally:
        await hub.close()


async def test_a_tail_whose_cancellation_is_lost_still_stops(
    backend: Backend, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 3.11 a cancel that meets a finishing `wait_for` is swallowed (fakeredis's
    reads use one): the tail must end all the same, not read on for ever."""
    monkeypatch.setattr(live, "TAIL_BLOCK_MS", 100)
    swallowed = 0

    async def read_that_swallows_a_cancel(*_args: object, **_kwargs: object) -> list[object]:
        nonlocal swallowed
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            swallowed += 1  # what wait_for does when its result is ready too
        return []

    monkeypatch.setattr(backend, "xread", read_that_swallows_a_cancel)
    hub = Hub(backend, Keyspace(settings.partitions))
    try:
        subscription = await hub.subscribe("tlost")
        async with asyncio.timeout(5):
            await hub.unsubscribe(subscription)
        assert swallowed == 1
        assert hub.tail_stats() == {}
    finally:
        await hub.close()


async def test_a_tail_gives_up_on_a_read_that_a_paused_redis_never_answers(
    own_redis: tuple[str, int],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="slipstream.live")
    monkeypatch.setattr(live, "TAIL_BLOCK_MS", 200)
    monkeypatch.setattr(live, "READ_GRACE_S", 0.3)
    url, pid = own_redis
    backend = Backend.connect(url)
    keys = Keyspace(settings.partitions)
    store = EventStore(backend, keys)
    hub = Hub(backend, keys)
    try:
        thread_id, _ = await create_thread(store)
        subscription = await hub.subscribe(thread_id)
        name = tail_name(keys, thread_id)
        os.kill(pid, signal.SIGSTOP)
        try:

            async def gave_up_twice() -> bool:
                return hub.tail_stats()[name]["faults"] >= 2

            await until(gave_up_twice)
        finally:
            os.kill(pid, signal.SIGCONT)
        ids = [await rename(store, thread_id, f"title {i}") for i in range(3)]

        async def caught_up() -> bool:
            return len(subscription.pending) >= len(ids)

        await until(caught_up)
        assert [entry_id for entry_id, _ in subscription.pending] == ids
        assert len(warnings_of(caplog, name, "Redis fault (TimeoutError: no reply")) == 1
        assert len(warnings_of(caplog, name, "working again")) == 1
    finally:
        await hub.close()
        await backend.close()


def test_a_thread_list_that_overflows_is_sent_whole_again() -> None:
    from service.live import ListSubscription

    watcher = ListSubscription(changed=asyncio.Queue(2))
    for n in range(3):
        watcher.offer(f"t{n}", f"1-{n}")
    assert watcher.reload
