"""DELETE /api/threads/{id} against the whole system on a real redis-server: every key
of the thread goes (the keyspace is scanned for it), the thread is a 404 everywhere
after, a run streaming meanwhile stops cleanly and nothing comes back, and only its
owner may delete it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from projections import thread_view
from projections.thread_view import ThreadView
from projections.views import FoldFailed, ViewStore
from service.deletion import Deleter
from slipstream import threads
from slipstream.backend import Backend, as_entries
from slipstream.config import Settings
from slipstream.keys import PROJECTORS_GROUP, Partition
from slipstream.store import EventStore
from slipstream.threads import message_dedupe_key
from tests.harness import System, running_system
from tests.waits import until


@dataclass(frozen=True)
class Trace:
    key: str
    where: str
    ttl_ms: int  # -1: none


async def traces(redis: Redis, thread_id: str) -> list[Trace]:
    """Every place the thread (or one of its runs: their ids start with the thread's)
    is named in the whole keyspace: key names, hash fields and values, set, sorted-set
    and list members, stream entries and strings."""
    found: list[Trace] = []
    async for raw in redis.scan_iter(count=1000):
        key = str(raw)
        kind = str(await redis.type(key))
        ttl = int(await redis.pttl(key))
        places: list[tuple[str, str]] = [("name", key)]
        if kind == "hash":
            held = {str(f): str(v) for f, v in (await redis.hgetall(key)).items()}
            places += [(f"field {f}", f"{f} {v}") for f, v in held.items()]
        elif kind == "zset":
            places += [("member", str(m)) for m in await redis.zrange(key, 0, -1)]
        elif kind == "set":
            places += [("member", str(m)) for m in await redis.smembers(key)]
        elif kind == "list":
            places += [("item", str(i)) for i in await redis.lrange(key, 0, -1)]
        elif kind == "stream":
            places += [
                (f"entry {entry_id}", " ".join(f"{k} {v}" for k, v in fields.items()))
                for entry_id, fields in as_entries(await redis.xrange(key))
            ]
        elif kind == "string":
            places.append(("value", str(await redis.get(key))))
        found += [Trace(key, where, ttl) for where, text in places if thread_id in text]
    return found


def lasting(found: list[Trace], part: Partition) -> list[Trace]:
    """What a delete must not leave: anything without a lifetime, but the feed's copies
    of the thread's events (the feed is trimmed, not searched: see service/deletion.py)."""
    return [t for t in found if t.ttl_ms < 0 and t.key != part.feed]


async def projector_caught_up(redis: Redis, part: Partition) -> bool:
    """The projectors' group has read and acked every entry of the partition's feed."""
    groups = await redis.xinfo_groups(part.feed)
    group = next(g for g in groups if g["name"] == PROJECTORS_GROUP)
    return int(group["pending"]) == 0 and int(group.get("lag") or 0) == 0


@dataclass
class Users:
    system: System
    tokens: dict[str, str]

    def client(self, who: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=str(self.system.http.base_url),
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
        )


@pytest.fixture
async def users(real_backend: Backend, settings: Settings) -> AsyncIterator[Users]:
    tokens_mode = dataclasses.replace(settings, auth="tokens", heartbeat_s=0.2)
    async with running_system(real_backend, tokens_mode) as system:
        made = {who: await system.runtime.auth.users.add(who) for who in ("ann", "bob", "eve")}
        yield Users(system, made)


async def answered(client: httpx.AsyncClient, thread_id: str, content: str, **extra: str) -> str:
    sent = await client.post(
        f"/api/threads/{thread_id}/messages", json={"content": content, **extra}
    )
    assert sent.status_code == 202, sent.text
    run_id: str = sent.json()["run_id"]

    async def ended() -> bool:
        run = (await client.get(f"/api/threads/{thread_id}")).json()["runs"].get(run_id)
        return bool(run) and run["status"] in ("completed", "failed", "cancelled")

    await until(ended, within=20)
    return run_id


async def test_a_delete_leaves_no_key_of_the_thread(users: Users) -> None:
    redis = users.system.runtime.backend.client
    store = users.system.runtime.store
    async with users.client("ann") as ann, users.client("bob") as bob:
        thread_id = (await ann.post("/api/threads", json={"title": "Tidewater"})).json()["id"]
        part = store.keys.partition(thread_id)
        assert (
            await ann.post(f"/api/threads/{thread_id}/members", json={"user": "bob"})
        ).status_code == 200
        runs = [
            await answered(ann, thread_id, "How do tides work?", client_id="c-1"),
            await answered(bob, thread_id, "And the moon?"),
        ]
        await until(lambda: projector_caught_up(redis, part), within=20)
        found = (await ann.get("/api/threads", params={"q": "tides"})).json()
        assert [t["id"] for t in found] == [thread_id]

        before = await traces(redis, thread_id)
        names = {t.key for t in before}
        # The scan sees every kind of key the thread has, so its silence after means something.
        assert {
            part.thread(thread_id),
            part.view(thread_id),
            part.access(thread_id),
            part.search_doc(thread_id),
            part.search_word("tides"),
            part.summaries,
            part.threads,
            part.users_threads("ann"),
            part.users_threads("bob"),
            part.runs,
            part.runs_by_time,
            part.runs_ended,
            part.runs_with_status("completed"),
            *(part.run(run_id) for run_id in runs),
        } <= names
        client_key = part.dedupe(message_dedupe_key(thread_id, "c-1"))
        assert await redis.exists(client_key)

        deleted = await ann.delete(f"/api/threads/{thread_id}")
        assert deleted.status_code == 204 and deleted.content == b""

        await until(lambda: projector_caught_up(redis, part), within=20)
        assert lasting(await traces(redis, thread_id), part) == []
        assert not await redis.exists(client_key)
        for who in (ann, bob):
            assert (await who.get(f"/api/threads/{thread_id}")).status_code == 404
            assert (await who.get(f"/api/threads/{thread_id}/events")).status_code == 404
            assert (await who.get(f"/api/runs/{runs[0]}")).status_code == 404
            listed = (await who.get("/api/threads")).json()
            assert thread_id not in {t["id"] for t in listed}
            assert (await who.get("/api/threads", params={"q": "tides"})).json() == []
            run_ids = {r["id"] for r in (await who.get("/api/runs")).json()}
            assert not run_ids & set(runs)
        async with connect(
            users.system.ws_url(thread_id),
            additional_headers={"Authorization": f"Bearer {users.tokens['ann']}"},
        ) as socket:
            refused = orjson.loads(await socket.recv())
            assert refused == {"type": "error", "detail": f"thread {thread_id!r} does not exist"}
            with pytest.raises(ConnectionClosed) as closed:
                await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


async def test_only_the_owner_deletes(users: Users) -> None:
    async with (
        users.client("ann") as ann,
        users.client("bob") as bob,
        users.client("eve") as eve,
    ):
        thread_id = (await ann.post("/api/threads", json={"title": "Mine"})).json()["id"]
        await ann.post(f"/api/threads/{thread_id}/members", json={"user": "bob"})
        length = await users.system.runtime.store.version(thread_id)

        as_member = await bob.delete(f"/api/threads/{thread_id}")
        assert as_member.status_code == 403
        assert as_member.json()["detail"] == "only the thread's owner deletes it"
        as_stranger = await eve.delete(f"/api/threads/{thread_id}")
        assert as_stranger.status_code == 404
        # Word for word what a thread that was never made answers.
        assert as_stranger.json()["detail"] == f"thread {thread_id!r} does not exist"
        assert await users.system.runtime.store.version(thread_id) == length  # nothing written
        assert (await ann.get(f"/api/threads/{thread_id}")).status_code == 200

        assert (await ann.delete(f"/api/threads/{thread_id}")).status_code == 204
        again = await ann.delete(f"/api/threads/{thread_id}")
        assert again.status_code == 404
        assert again.json()["detail"] == f"thread {thread_id!r} does not exist"

        bad = await ann.delete("/api/threads/has%20space")
        assert bad.status_code == 422 and "thread_id" in bad.text
        too_long = await ann.delete(f"/api/threads/{'x' * 65}")
        assert too_long.status_code == 422


async def test_a_deleted_thread_can_be_made_again_with_its_id(
    real_backend: Backend, settings: Settings
) -> None:
    """Protocols make threads from client ids (the AI SDK's chat id): the same id again
    is a new thread, empty, and a client id sent before is a new message in it."""
    async with running_system(real_backend, settings) as system:
        store = system.runtime.store
        thread_id = "chat-again"
        await threads.create_thread_with_id(store, thread_id, "First life")
        await answered(system.http, thread_id, "remember the walrus", client_id="u-1")
        assert (await system.http.delete(f"/api/threads/{thread_id}")).status_code == 204

        await threads.create_thread_with_id(store, thread_id, "Second life")
        sent = await system.http.post(
            f"/api/threads/{thread_id}/messages", json={"content": "hello", "client_id": "u-1"}
        )
        assert sent.status_code == 202 and not sent.json()["duplicate"]
        view = await system.view(thread_id)
        assert view["title"] == "Second life"
        assert [m["content"] for m in view["messages"] if m["role"] == "user"] == ["hello"]

        async def walrus_forgotten() -> bool:
            part = store.keys.partition(thread_id)
            caught_up = await projector_caught_up(system.runtime.backend.client, part)
            hits = (await system.http.get("/api/threads", params={"q": "walrus"})).json()
            return caught_up and hits == []

        await until(walrus_forgotten, within=20)
        hits = (await system.http.get("/api/threads", params={"q": "second"})).json()
        assert [h["id"] for h in hits] == [thread_id]


async def test_a_delete_while_an_answer_streams(
    real_backend: Backend, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    slow = dataclasses.replace(
        settings, scripted_delay_ms=20, scripted_words=2000, flush_ms=20, heartbeat_s=0.2
    )
    caplog.set_level(logging.INFO, logger="slipstream")
    async with running_system(real_backend, slow) as system:
        redis = system.runtime.backend.client
        thread_id = await system.new_thread()
        part = system.runtime.store.keys.partition(thread_id)
        accepted = await system.send(thread_id, "Tell me a long story")

        async def streaming() -> bool:
            view = await system.view(thread_id)
            reply = view["messages"][-1]
            return reply["status"] == "streaming" and len(reply["content"]) > 40

        await until(streaming, within=20)
        async with connect(system.ws_url(thread_id)) as watcher:
            assert (await watcher.recv()) is not None  # the snapshot
            deleted = await system.http.delete(f"/api/threads/{thread_id}")
            assert deleted.status_code == 204
            # The watcher is closed as for a thread that does not exist, at its next beat.
            last: dict[str, object] = {}
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        last = orjson.loads(await watcher.recv())
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
            assert last == {"type": "error", "detail": f"thread {thread_id!r} does not exist"}

        async def run_stopped() -> bool:
            return any("its thread was deleted" in r.getMessage() for r in caplog.records)

        await until(run_stopped, within=10)
        await until(lambda: projector_caught_up(redis, part), within=20)
        # The worker's last writes were refused and the projector found no stream:
        # nothing of the thread came back.
        assert lasting(await traces(redis, thread_id), part) == []
        assert (await system.http.get(f"/api/threads/{thread_id}")).status_code == 404
        assert (await system.http.get(f"/api/runs/{accepted['run_id']}")).status_code == 404
        problems = [
            r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info is not None
        ]
        assert problems == [], [r.getMessage() for r in problems]


async def test_a_thread_whose_events_do_not_fold_is_deleted_too(
    real_backend: Backend, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its runs and client ids come from its events then; runs queued and waiting go,
    with their work items."""
    store = EventStore.from_settings(real_backend, settings)
    views = ViewStore(store)
    thread_id, _ = await threads.create_thread(store, "Broken", owner="ann")
    first = await threads.send_message(store, thread_id, "one", "assistant", client_id="k-1")
    second = await threads.send_message(store, thread_id, "two", "assistant")
    part = store.keys.partition(thread_id)
    assert await real_backend.client.exists(part.run(first.run_id), part.run(second.run_id)) == 2
    assert await real_backend.client.llen(part.queue(thread_id)) == 1  # the second waits

    async def unfoldable(thread_id: str) -> ThreadView:
        raise FoldFailed(thread_id)

    monkeypatch.setattr(views, "current", unfoldable)
    assert await Deleter(store, views).delete(thread_id)
    assert lasting(await traces(real_backend.client, thread_id), part) == []
    assert not await real_backend.client.exists(part.dedupe(message_dedupe_key(thread_id, "k-1")))
    assert not await Deleter(store, views).delete(thread_id)  # gone: nothing to delete


async def test_a_run_requested_while_deleting_is_deleted_too(
    real_backend: Backend, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the read that names the keys and the script, the thread moves on: the
    script deletes nothing, and the next read names the new run too."""
    store = EventStore.from_settings(real_backend, settings)
    deleter = Deleter(store, ViewStore(store))
    thread_id, _ = await threads.create_thread(store, "Racing", owner="ann")
    part = store.keys.partition(thread_id)
    read = deleter._history
    late: list[str] = []

    async def history_then_a_send(thread_id: str) -> tuple[str | None, list[str], set[str]]:
        found = await read(thread_id)
        if not late:
            sent = await threads.send_message(store, thread_id, "late", "assistant")
            late.append(sent.run_id)
        return found

    monkeypatch.setattr(deleter, "_history", history_then_a_send)
    assert await deleter.delete(thread_id)
    assert late and not await real_backend.client.exists(part.run(late[0]))
    assert lasting(await traces(real_backend.client, thread_id), part) == []


async def test_every_open_thread_list_drops_a_deleted_thread(
    real_backend: Backend, settings: Settings
) -> None:
    """Another tab's live list is told: it gets the whole list again, without the thread."""
    async with running_system(real_backend, settings) as system:
        kept = (await system.http.post("/api/threads", json={"title": "kept"})).json()["id"]
        gone = (await system.http.post("/api/threads", json={"title": "gone"})).json()["id"]
        url = f"ws://127.0.0.1:{system.port}/api/live/threads"
        async with connect(url) as socket:
            first = orjson.loads(await socket.recv())
            assert first["type"] == "threads"
            assert {kept, gone} <= {t["id"] for t in first["threads"]}
            assert (await system.http.delete(f"/api/threads/{gone}")).status_code == 204
            async with asyncio.timeout(10):
                while True:
                    frame = orjson.loads(await socket.recv())
                    if frame["type"] == "threads":
                        break
            listed = {t["id"] for t in frame["threads"]}
            assert kept in listed and gone not in listed


async def test_a_thread_indexed_first_by_the_delete_leaves_no_word_behind(
    store: EventStore,
) -> None:
    """A view stored before the index existed (an older layout, no search doc) is rebuilt,
    and so indexed, when the delete reads it: the words that rebuild wrote go too."""
    views = ViewStore(store)
    redis = store.redis
    thread_id, _ = await threads.create_thread(store, "Zebra title", owner="ann")
    await threads.send_message(store, thread_id, "xylophone quokka", "assistant")
    snapshot = await views.read(thread_id)
    await views.save(snapshot, await views.advance(snapshot))
    part = store.keys.partition(thread_id)
    words = ("xylophone", "quokka", "zebra")
    for word in words:
        assert await redis.zrange(part.search_word(word), 0, -1) == [thread_id]
    # As it was before the upgrade: a view of the older layout, and no index of it.
    await redis.hset(part.view(thread_id), "schema", str(thread_view.SCHEMA_VERSION - 1))
    await redis.delete(part.search_doc(thread_id), *(part.search_word(w) for w in words))

    assert await Deleter(store, views).delete(thread_id)
    assert [await redis.exists(part.search_word(w)) for w in words] == [0, 0, 0]
    assert not await redis.exists(part.search_doc(thread_id))
