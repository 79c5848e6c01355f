"""The worker answers runs through the append script, on real Redis and fakeredis."""

from __future__ import annotations

import dataclasses

import pytest

from consumers.llm.scripted import ScriptedLLM, scripted_reply
from consumers.worker import Worker
from projections.views import ViewStore
from service import commands
from slipstream import errors
from slipstream import events as ev
from slipstream.config import Settings
from slipstream.keys import WORKERS_GROUP
from slipstream.store import Append, EventStore


def worker_for(store: EventStore, settings: Settings, **llm: int) -> Worker:
    scripted = ScriptedLLM(
        words=llm.get("words", settings.scripted_words), delay_ms=llm.get("delay", 0)
    )
    return Worker(store.backend, store, scripted, settings)


async def test_a_message_gets_the_scripted_answer(store: EventStore, settings: Settings) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "What is a stream?", "assistant")
    worker = worker_for(store, settings)

    assert await worker.run_once() == 1

    view = await ViewStore(store).current(thread_id)
    reply = view.messages[-1]
    assert reply.role == "assistant" and reply.run_id == sent.run_id
    assert reply.status == "completed"
    assert reply.content == scripted_reply("What is a stream?", settings.scripted_words)
    assert view.runs[sent.run_id].status == "completed"
    types = [s.event.type for s in await store.read(thread_id)]
    assert types[:4] == ["thread.created", "message.sent", "run.requested", "run.started"]
    # The model call's usage goes out with the completion (consumers/agent_loop.py).
    assert types[-3:] == ["message.completed", "model.usage", "run.completed"]
    part = store.keys.partition(thread_id)
    assert (await store.redis.xpending(part.work, WORKERS_GROUP))["pending"] == 0


async def test_deltas_join_to_the_completed_text(store: EventStore, settings: Settings) -> None:
    thread_id, _ = await commands.create_thread(store)
    await commands.send_message(store, thread_id, "tell me more", "assistant")
    await worker_for(store, settings, words=120, delay=2).run_once()

    stored = [s.event for s in await store.read(thread_id)]
    deltas = [e for e in stored if isinstance(e, ev.MessageDelta)]
    completed = next(e for e in stored if isinstance(e, ev.MessageCompleted))
    assert "".join(d.text for d in deltas) == completed.text
    assert [d.seq for d in deltas] == list(range(1, len(deltas) + 1))
    assert 1 < len(deltas) < 120  # coalesced: never one event per word


async def test_the_last_delta_is_written_with_the_completion(
    store: EventStore, settings: Settings
) -> None:
    thread_id, _ = await commands.create_thread(store)
    await commands.send_message(store, thread_id, "echo: no sentence end here", "assistant")
    await worker_for(store, settings).run_once()

    stored = await store.read(thread_id)
    tail = [s for s in stored if s.event.type in ("message.delta", "message.completed")]
    assert [s.event.type for s in tail] == ["message.delta", "message.completed"]
    # The run hash remembers the ids its last append call wrote: both are among them.
    run_id = stored[-1].event.run_id  # type: ignore[union-attr]
    last_ids = await store.redis.hget(store.keys.partition(thread_id).run(run_id), "last_ids")
    assert last_ids.split(",")[:2] == [tail[0].id, tail[1].id]


async def test_a_stale_worker_cannot_write(store: EventStore, settings: Settings) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hi", "assistant")
    worker = worker_for(store, settings)
    old = await worker.leases.claim(sent.run_id, thread_id, "old")
    await store.redis.hset(store.keys.partition(thread_id).run(sent.run_id), "lease_until", 0)
    new = await worker.leases.claim(sent.run_id, thread_id, "new")
    assert new.token == old.token + 1 and new.attempt == 2

    delta = ev.MessageDelta(run_id=sent.run_id, message_id="x", seq=1, text="zombie")
    with pytest.raises(errors.StaleFence):
        await store.append(Append(thread_id, [delta], run_id=sent.run_id, fence=old.token))
    assert "zombie" not in str(await store.read(thread_id))


async def test_a_live_lease_is_not_taken(store: EventStore, settings: Settings) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hi", "assistant")
    worker = worker_for(store, settings)
    assert (await worker.leases.claim(sent.run_id, thread_id, "one")).outcome == "OK"
    busy = await worker.leases.claim(sent.run_id, thread_id, "two")
    assert busy.outcome == "BUSY" and "one" in busy.detail


async def test_work_of_a_dead_worker_is_taken_over(redis_url: str, settings: Settings) -> None:
    from slipstream.backend import Backend
    from slipstream.keys import Keyspace

    backend = Backend.connect(redis_url)
    store = EventStore(backend, Keyspace(settings.partitions))
    fast = dataclasses.replace(settings, lease_ms=200)
    try:
        thread_id, _ = await commands.create_thread(store)
        sent = await commands.send_message(store, thread_id, "hi there", "assistant")
        part = store.keys.partition(thread_id)
        await store.redis.xgroup_create(part.work, WORKERS_GROUP, id="0", mkstream=True)
        # A worker took the lease, read the item and died without a word. (Lease
        # first: once the item has been idle for the lease time, the lease is over too.)
        worker = Worker(backend, store, ScriptedLLM(words=20, delay_ms=0), fast)
        await worker.leases.claim(sent.run_id, thread_id, "dead:1:x")
        await store.redis.xreadgroup(WORKERS_GROUP, "dead:1:x", {part.work: ">"})

        assert await worker.run_once() == 0  # lease and idle time not yet over
        await _wait_idle(store, part.work, 200)
        assert await worker.run_once() == 1

        view = await ViewStore(store).current(thread_id)
        assert view.messages[-1].content == scripted_reply("hi there", 20)
        assert view.runs[sent.run_id].attempt == 2
    finally:
        await backend.close()


async def _wait_idle(store: EventStore, stream: str, idle_ms: int) -> None:
    """Wait on the condition XAUTOCLAIM checks: the pending item's idle time."""
    import asyncio

    while True:
        pending = await store.redis.xpending_range(stream, WORKERS_GROUP, "-", "+", 10)
        if pending and min(p["time_since_delivered"] for p in pending) >= idle_ms:
            return
        await asyncio.sleep(0.02)
