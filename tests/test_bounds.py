"""Every key the write side makes has a lifetime or a bound (real redis-server)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from consumers.llm.scripted import ScriptedLLM
from consumers.worker import Worker
from projections.views import ViewStore
from service import commands
from slipstream import errors
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.store import Append, EventStore
from slipstream.threads import message_dedupe_key
from tests.harness import running_system
from tests.waits import until


def short_lived(settings: Settings, **changes: int) -> Settings:
    return dataclasses.replace(settings, dedupe_window_s=1, run_retention_s=1, **changes)


@pytest.fixture
def store(real_backend: Backend, settings: Settings) -> EventStore:
    return EventStore.from_settings(real_backend, short_lived(settings))


def worker(store: EventStore, settings: Settings) -> Worker:
    return Worker(store.backend, store, ScriptedLLM(words=5, delay_ms=0), short_lived(settings))


async def gone(store: EventStore, key: str) -> bool:
    return not await store.redis.exists(key)


async def test_a_resend_is_recognised_for_the_window_then_it_is_a_new_message(
    store: EventStore,
) -> None:
    thread_id, _ = await commands.create_thread(store)
    first = await commands.send_message(store, thread_id, "hi", "assistant", client_id="c-1")
    key = store.keys.partition(thread_id).dedupe(message_dedupe_key(thread_id, "c-1"))
    assert 0 < await store.redis.pttl(key) <= 1000
    again = await commands.send_message(store, thread_id, "hi", "assistant", client_id="c-1")
    assert (again.run_id, again.message_id, again.duplicate) == (
        first.run_id,
        first.message_id,
        True,
    )
    await until(lambda: gone(store, key))
    later = await commands.send_message(store, thread_id, "hi", "assistant", client_id="c-1")
    assert not later.duplicate and later.run_id != first.run_id
    assert later.message_id != first.message_id


async def test_a_finished_run_hash_expires_and_a_restart_keeps_it_again(
    real_backend: Backend, settings: Settings
) -> None:
    long = EventStore.from_settings(real_backend, dataclasses.replace(settings, run_retention_s=60))
    thread_id, _ = await commands.create_thread(long)
    sent = await commands.send_message(long, thread_id, "hi", "assistant")
    key = long.keys.partition(thread_id).run(sent.run_id)
    assert await long.redis.pttl(key) == -1  # queued: no lifetime while it may still run
    await commands.cancel_run(long, sent.run_id)
    assert 0 < await long.redis.pttl(key) <= 60_000
    await commands.restart_run(long, sent.run_id)
    assert await long.redis.pttl(key) == -1
    await worker(long, settings).run_once()
    assert (await long.run_state(sent.run_id, thread_id))["status"] == "completed"
    assert 0 < await long.redis.pttl(key) <= 60_000


async def test_commands_on_an_expired_run_answer_404(
    real_backend: Backend, settings: Settings
) -> None:
    async with running_system(real_backend, short_lived(settings), workers=False) as system:
        store = system.runtime.store
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "hi")
        await worker(store, settings).run_once()
        key = store.keys.partition(thread_id).run(sent["run_id"])
        await until(lambda: gone(store, key))
        version = await store.version(thread_id)
        for path, body in [
            ("cancel", {}),
            ("retry", {}),
            ("signal", {"name": "approval"}),
        ]:
            response = await system.http.post(f"/api/runs/{sent['run_id']}/{path}", json=body)
            assert response.status_code == 404, (path, response.text)
            assert "does not exist" in response.json()["detail"]
        assert await store.version(thread_id) == version


async def test_dead_letters_are_capped(real_backend: Backend, settings: Settings) -> None:
    store = EventStore.from_settings(real_backend, dataclasses.replace(settings, dead_maxlen=10))
    thread_id, _ = await commands.create_thread(store)
    for n in range(400):
        await store.append(Append(thread_id, [], run_id=f"{thread_id}.{n:06x}", dead_letter="x"))
    # Approximate trimming drops whole nodes of the stream (100 entries each).
    assert await store.redis.xlen(store.keys.partition(thread_id).dead) <= 10 + 100


async def test_a_message_past_the_queue_bound_is_refused_with_429(
    real_backend: Backend, settings: Settings
) -> None:
    bounded = short_lived(settings, queue_max=3)
    async with running_system(real_backend, bounded, workers=False) as system:
        store = system.runtime.store
        thread_id = await system.new_thread()
        for n in range(4):  # one active, three waiting
            await system.send(thread_id, f"m{n}")
        queue = store.keys.partition(thread_id).queue(thread_id)
        version = await store.version(thread_id)
        refused = await system.http.post(
            f"/api/threads/{thread_id}/messages", json={"content": "one too many"}
        )
        assert refused.status_code == 429
        assert "3 runs waiting" in refused.json()["detail"]
        assert "SLIPSTREAM_QUEUE_MAX" in refused.json()["detail"]
        assert await store.version(thread_id) == version
        assert await store.redis.llen(queue) == 3
        with pytest.raises(errors.QueueFull):  # interrupting queues too
            await commands.send_message(store, thread_id, "now", "assistant", on_busy="interrupt")
        assert await store.version(thread_id) == version
        await worker(store, settings).run_once()
        # Redis deletes a list when its last item goes: nothing is left per thread.
        assert not await store.redis.exists(queue)
        lanes = await store.redis.hgetall(store.keys.partition(thread_id).active)
        assert not [lane for lane in lanes if str(lane).startswith(f"{thread_id}:")]


def _per_run_key(key: str) -> bool:
    return ":thread:" not in key and ":view:" not in key


async def _keys(store: EventStore) -> list[str]:
    return sorted(str(k) for k in await store.redis.keys("*") if _per_run_key(str(k)))


async def _memory(store: EventStore, keys: list[str]) -> int:
    return sum([await store.redis.memory_usage(k, samples=0) or 0 for k in keys])


async def test_keys_return_to_a_flat_level_after_thousands_of_runs(
    store: EventStore, settings: Settings
) -> None:
    """Runs with client ids, resends, cancels and retries with client ids, then the wait."""
    # The smallest feed, so that the bounded streams reach their bound within the test.
    store = EventStore.from_settings(
        store.backend, dataclasses.replace(short_lived(settings), feed_maxlen=1000)
    )
    threads = [(await commands.create_thread(store))[0] for _ in range(300)]
    w = worker(store, settings)
    await w.setup()
    before = await _keys(store)
    info = await store.redis.info("memory")
    print(f"\nbefore: {len(before)} keys, used_memory {info['used_memory']}")
    levels: list[list[str]] = []
    sizes: list[int] = []
    for round_ in range(2):
        began = time.perf_counter()
        runs = []
        for n in range(1500):
            thread_id = threads[n % len(threads)]
            cid = f"r{round_}-{n}"
            sent = await commands.send_message(
                store, thread_id, f"q {n}", "assistant", client_id=cid
            )
            await commands.send_message(store, thread_id, f"q {n}", "assistant", client_id=cid)
            runs.append(sent.run_id)
        for run_id in runs[-len(threads) :]:  # queued ones: cancelled, then retried
            await commands.cancel_run(store, run_id, client_id=f"cancel-{run_id}")
            await commands.restart_run(store, run_id, client_id=f"retry-{run_id}")
        during = await _keys(store)  # run hashes and queues: the runs are not done yet
        handled = await w.run_once()
        views = {t: await ViewStore(store).current(t) for t in threads}
        assert {views[r.rsplit(".", 1)[0]].runs[r].status for r in runs} == {"completed"}
        await until(lambda: _settled(store), within=30)
        after = await _keys(store)
        levels.append(after)
        sizes.append(await _memory(store, after))
        info = await store.redis.info("memory")
        print(
            f"round {round_ + 1}: {handled} work items in {time.perf_counter() - began:.1f}s; "
            f"{len(during)} keys before they ran, {len(after)} once the windows passed "
            f"({sizes[-1]} bytes in them), used_memory {info['used_memory']} "
            "(the thread streams grow: they are the history)"
        )
    assert levels[0] == levels[1]
    assert sizes[1] <= sizes[0] * 1.25  # the bounded streams are at their bounds
    print("left:", ", ".join(levels[1]))
    # What stays is per partition (feed, work, thread index) and the worker registry.
    assert len(levels[1]) <= 3 * settings.partitions + 1


async def _settled(store: EventStore) -> bool:
    keys = await _keys(store)
    return not any(":run:" in k or ":dedupe:" in k or ":queue:" in k for k in keys)


async def test_a_signal_resend_window_key_expires(store: EventStore) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hi", "approval")
    await commands.signal_run(store, sent.run_id, "approval", {"approved": True}, "s-1")
    dedupe = [str(k) for k in await store.redis.keys("*:dedupe:*")]
    assert dedupe and all([0 < await store.redis.pttl(k) <= 1000 for k in dedupe])


def test_the_bounds_are_settings_with_documented_defaults(real_backend: Backend) -> None:
    defaults = Settings.from_env({})
    assert (
        defaults.dedupe_window_s,
        defaults.run_retention_s,
        defaults.dead_maxlen,
        defaults.queue_max,
    ) == (86_400, 604_800, 10_000, 100)
    chosen = Settings.from_env({"SLIPSTREAM_QUEUE_MAX": "7", "SLIPSTREAM_DEDUPE_WINDOW_S": "60"})
    store = EventStore.from_settings(real_backend, chosen)
    assert (store.queue_max, store.dedupe_window_ms) == (7, 60_000)
    with pytest.raises(errors.ConfigError, match="SLIPSTREAM_QUEUE_MAX=0 must be at least 1"):
        Settings.from_env({"SLIPSTREAM_QUEUE_MAX": "0"})


async def test_keys_from_before_lifetimes_get_theirs_once(
    store: EventStore, settings: Settings
) -> None:
    from slipstream.retention import backfill

    part = store.keys.partition("t1")
    await store.redis.set(part.dedupe("old-client"), "1-0,1-1")  # kept for good, as before
    await store.redis.hset(part.run("t1.aaaaaa"), mapping={"status": "completed"})
    await store.redis.hset(part.run("t1.bbbbbb"), mapping={"status": "running"})
    await store.redis.set(part.dedupe("new"), "1-2", px=500)
    done = await backfill(store.backend, dataclasses.replace(settings, run_retention_s=60))
    assert done == {"dedupe keys": 1, "finished run hashes": 1}
    assert 0 < await store.redis.pttl(part.dedupe("old-client")) <= 86_400_000
    assert 0 < await store.redis.pttl(part.run("t1.aaaaaa")) <= 60_000
    assert await store.redis.pttl(part.run("t1.bbbbbb")) == -1  # it may still run
    assert await store.redis.pttl(part.dedupe("new")) <= 500
    again = await backfill(store.backend, settings)
    assert sum(again.values()) == 0
