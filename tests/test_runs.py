"""Runs end in exactly one terminal state: order, cancel, retries, dead letters, hand-back."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from websockets.asyncio.client import connect

from consumers.backoff import compute_backoff
from consumers.llm.parts import Part, TextPart
from consumers.llm.scripted import ScriptedLLM, scripted_reply
from consumers.worker import Worker
from projections.views import ViewStore
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ProviderError
from slipstream.store import EventStore
from tests.fake_llm import FlakyLLM, GatedLLM
from tests.harness import System, frames_until, running_system
from tests.waits import until

TERMINAL = {"run.completed", "run.cancelled", "run.failed"}


async def events(system: System, thread_id: str) -> list[dict]:  # type: ignore[type-arg]
    response = await system.http.get(f"/api/threads/{thread_id}/events")
    return [e["event"] for e in response.json()]


async def first_words_written(system: System, *thread_ids: str) -> bool:
    """The gated model's first sentence is in each thread's last message."""
    views = [await system.view(t) for t in thread_ids]
    return all(v["messages"][-1]["content"] == "First. " for v in views)


def quick(settings: Settings, **changes: int) -> Settings:
    return dataclasses.replace(settings, retry_base_ms=20, retry_max_ms=100, **changes)


async def test_messages_in_one_thread_are_answered_in_order(
    backend: Backend, settings: Settings
) -> None:
    async with running_system(backend, settings, llm=ScriptedLLM(words=30, delay_ms=1)) as system:
        thread_id = await system.new_thread()
        runs = [(await system.send(thread_id, f"question {i}"))["run_id"] for i in range(3)]
        await system.wait_for_run(thread_id, runs[-1])
        history = await events(system, thread_id)
    lifecycle = [
        (e["type"], e["run_id"]) for e in history if e["type"] in ("run.started", *TERMINAL)
    ]
    assert lifecycle == [(kind, run) for run in runs for kind in ("run.started", "run.completed")]
    view_replies = [e["text"] for e in history if e["type"] == "message.completed"]
    assert view_replies == [scripted_reply(f"question {i}", 30) for i in range(3)]


async def test_different_threads_stream_at_the_same_time(
    backend: Backend, settings: Settings
) -> None:
    llm = GatedLLM()
    async with running_system(backend, settings, llm=llm) as system:
        one, two = await system.new_thread(), await system.new_thread()
        first = await system.send(one, "a")
        second = await system.send(two, "b")

        # Each thread has its first words while the model waits.
        await until(lambda: first_words_written(system, one, two))
        llm.gate.set()
        await system.wait_for_run(one, first["run_id"])
        await system.wait_for_run(two, second["run_id"])


async def test_reject_refuses_a_message_while_a_run_is_active(
    backend: Backend, settings: Settings
) -> None:
    llm = GatedLLM()
    async with running_system(backend, settings, llm=llm) as system:
        thread_id = await system.new_thread()
        first = await system.send(thread_id, "long one")

        # Nothing more is written until the gate opens.
        await until(lambda: first_words_written(system, thread_id))
        version = await system.runtime.store.version(thread_id)
        refused = await system.http.post(
            f"/api/threads/{thread_id}/messages", json={"content": "b", "on_busy": "reject"}
        )
        assert refused.status_code == 409 and first["run_id"] in refused.json()["detail"]
        assert await system.runtime.store.version(thread_id) == version
        llm.gate.set()
        await system.wait_for_run(thread_id, first["run_id"])


async def test_interrupt_cancels_the_active_run_and_answers_the_new_one(
    backend: Backend, settings: Settings
) -> None:
    llm = GatedLLM()
    async with running_system(backend, settings, llm=llm) as system:
        thread_id = await system.new_thread()
        first = await system.send(thread_id, "long one")
        await asyncio.wait_for(llm.started.wait(), 10)
        second = await system.send(thread_id, "never mind", on_busy="interrupt")

        async def first_cancelled() -> bool:
            view = await system.view(thread_id)
            return bool(view["runs"][first["run_id"]]["status"] == "cancelled")

        await until(first_cancelled)
        llm.gate.set()  # the new run's model may finish now
        view = await system.wait_for_run(thread_id, second["run_id"])
    old = next(
        m for m in view["messages"] if m["run_id"] == first["run_id"] and m["role"] == "assistant"
    )
    assert (old["status"], old["content"]) == ("cancelled", "First. ")
    assert view["runs"][second["run_id"]]["status"] == "completed"


async def test_cancel_stops_a_model_between_tokens_within_200_ms(
    backend: Backend, settings: Settings
) -> None:
    llm = GatedLLM()
    async with running_system(backend, settings, llm=llm) as system:
        thread_id = await system.new_thread()
        accepted = await system.send(thread_id, "stop me")
        async with (
            connect(system.ws_url(thread_id)) as one,
            connect(system.ws_url(thread_id)) as two,
        ):
            # The snapshots first: a socket's snapshot is taken after its handshake, and one
            # taken after the cancel would already hold the run.cancelled we wait for below.
            for socket in (one, two):
                assert orjson.loads(await socket.recv())["type"] == "snapshot"
            await asyncio.wait_for(llm.started.wait(), 10)
            began = time.perf_counter()
            response = await system.http.post(f"/api/runs/{accepted['run_id']}/cancel")
            await frames_until(one, "run.cancelled")
            elapsed = time.perf_counter() - began
            await frames_until(two, "run.cancelled")
        assert response.status_code == 202 and response.json()["status"] == "cancel_requested"
        assert elapsed < 0.2, f"cancel took {elapsed * 1000:.0f} ms"
        assert llm.closed.is_set()  # the model stream itself was closed
        again = await system.http.post(f"/api/runs/{accepted['run_id']}/cancel")
        assert again.status_code == 409 and "cancelled" in again.json()["detail"]
        view = await system.view(thread_id)
    reply = view["messages"][-1]
    assert (reply["status"], reply["content"]) == ("cancelled", "First. ")


async def test_a_queued_run_is_cancelled_on_the_spot(backend: Backend, settings: Settings) -> None:
    llm = GatedLLM()
    async with running_system(backend, settings, llm=llm) as system:
        thread_id = await system.new_thread()
        first = await system.send(thread_id, "one")
        queued = await system.send(thread_id, "two")
        response = await system.http.post(f"/api/runs/{queued['run_id']}/cancel")
        assert response.json() == {
            "run_id": queued["run_id"],
            "status": "cancelled",
            "was": "queued",
        }
        llm.gate.set()
        view = await system.wait_for_run(thread_id, first["run_id"])
        history = await events(system, thread_id)
    assert view["runs"][queued["run_id"]]["status"] == "cancelled"
    started = [e["run_id"] for e in history if e["type"] == "run.started"]
    assert started == [first["run_id"]]


async def test_retryable_failures_retry_then_succeed(backend: Backend, settings: Settings) -> None:
    overloaded = ProviderError("overloaded", retryable=True)
    llm = FlakyLLM([overloaded, overloaded])
    async with running_system(backend, quick(settings), llm=llm) as system:
        thread_id = await system.new_thread()
        accepted = await system.send(thread_id, "try hard")
        view = await system.wait_for_run(thread_id, accepted["run_id"])
        history = await events(system, thread_id)
    run = view["runs"][accepted["run_id"]]
    assert (run["status"], run["attempt"]) == ("completed", 3)
    retries = [e for e in history if e["type"] == "run.retrying"]
    assert [r["attempt"] for r in retries] == [2, 3]
    assert all(10 <= r["delay_ms"] <= 100 for r in retries)
    assert view["messages"][-1]["content"] == scripted_reply("try hard", 20)
    assert llm.calls == 3


async def test_a_non_retryable_error_fails_at_once_into_dead_letters(
    backend: Backend, settings: Settings
) -> None:
    llm = FlakyLLM([ProviderError("401 invalid x-api-key", retryable=False)])
    async with running_system(backend, quick(settings), llm=llm) as system:
        thread_id = await system.new_thread()
        accepted = await system.send(thread_id, "doomed")
        view = await system.wait_for_run(thread_id, accepted["run_id"])
        dead = await system.runtime.store.redis.xrange(
            system.runtime.store.keys.partition(thread_id).dead
        )
    run = view["runs"][accepted["run_id"]]
    assert run["status"] == "failed" and "invalid x-api-key" in run["reason"]
    assert view["messages"][-1]["status"] == "failed"
    assert [f["run"] for _, f in dead] == [accepted["run_id"]]
    assert "invalid x-api-key" in dead[0][1]["reason"]
    assert llm.calls == 1


async def test_exhausted_retries_fail_and_a_retry_starts_afresh(
    backend: Backend, settings: Settings
) -> None:
    boom = ProviderError("overloaded", retryable=True)
    llm = FlakyLLM([boom, boom, boom])
    async with running_system(backend, quick(settings, max_attempts=3), llm=llm) as system:
        thread_id = await system.new_thread()
        accepted = await system.send(thread_id, "persist")
        view = await system.wait_for_run(thread_id, accepted["run_id"])
        assert view["runs"][accepted["run_id"]]["status"] == "failed"
        assert "gave up after 3 attempts" in view["runs"][accepted["run_id"]]["reason"]

        retried = await system.http.post(f"/api/runs/{accepted['run_id']}/retry")
        assert retried.status_code == 202 and retried.json()["was"] == "failed"
        async with connect(system.ws_url(thread_id, after=view["last_event_id"])) as socket:
            await frames_until(socket, "run.completed", accepted["run_id"])
        view = await system.view(thread_id)
        again = await system.http.post(f"/api/runs/{accepted['run_id']}/retry")
    assert view["messages"][-1]["content"] == scripted_reply("persist", 20)
    assert view["runs"][accepted["run_id"]]["attempt"] == 4
    assert again.status_code == 409


async def test_shutdown_hands_runs_back_without_waiting_for_the_lease(
    real_backend: Backend, settings: Settings
) -> None:
    long_lease = dataclasses.replace(settings, lease_ms=60_000)
    async with running_system(real_backend, long_lease, workers=False) as system:
        thread_id = await system.new_thread()
        accepted = await system.send(thread_id, "hand me over")
        gated = GatedLLM()
        first = Worker(real_backend, system.runtime.store, gated, long_lease)
        stop_first = asyncio.Event()
        first_task = asyncio.create_task(first.run(stop_first))
        await asyncio.wait_for(gated.started.wait(), 10)
        began = time.perf_counter()
        stop_first.set()
        await asyncio.wait_for(first_task, 5)
        assert first.stats["handed_back"] == 1
        second = Worker(
            real_backend, system.runtime.store, ScriptedLLM(words=20, delay_ms=0), long_lease
        )
        stop_second = asyncio.Event()
        second_task = asyncio.create_task(second.run(stop_second))
        try:
            await system.wait_for_run(thread_id, accepted["run_id"])
            elapsed = time.perf_counter() - began
        finally:
            stop_second.set()
            await second_task
        view = await system.view(thread_id)
    assert elapsed < 5, f"took {elapsed:.1f}s; the lease is 60 s"
    assert view["runs"][accepted["run_id"]]["attempt"] == 2
    assert view["messages"][-1]["content"] == scripted_reply("hand me over", 20)


async def test_a_due_timer_fires_once_among_several_workers(
    real_backend: Backend, settings: Settings
) -> None:
    from service import commands
    from slipstream.keys import Keyspace
    from slipstream.store import EventStore

    store = EventStore(real_backend, Keyspace(settings.partitions))
    thread_id, _ = await commands.create_thread(store)
    part = store.keys.partition(thread_id)
    await store.redis.zadd(part.timers, {f"{thread_id}.abcdef": 0})
    workers = [Worker(real_backend, store, ScriptedLLM(), settings) for _ in range(3)]
    await asyncio.gather(*(w._fire_due_timers() for w in workers))
    assert sum(w.stats["timers_fired"] for w in workers) == 1
    assert await store.redis.xlen(part.work) == 1


def test_backoff_doubles_with_jitter_and_a_ceiling() -> None:
    rng = random.Random(7)
    delays = [compute_backoff(n, base_ms=500, max_ms=4000, rng=rng) for n in range(1, 7)]
    ceilings = [500, 1000, 2000, 4000, 4000, 4000]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert compute_backoff(1, rng=random.Random(0)) != compute_backoff(1, rng=random.Random(1))
    with pytest.raises(ValueError, match="at least 1"):
        compute_backoff(0)


async def test_the_socket_shows_a_retry_as_a_status_not_as_duplicate_text(
    backend: Backend, settings: Settings
) -> None:
    llm = FlakyLLM([ProviderError("overloaded", retryable=True)])
    async with running_system(backend, quick(settings), llm=llm) as system:
        thread_id = await system.new_thread()
        async with connect(system.ws_url(thread_id)) as socket:
            orjson.loads(await socket.recv())
            accepted = await system.send(thread_id, "once more")
            frames = await frames_until(socket, "run.completed", accepted["run_id"])
        view = await system.view(thread_id)
    kinds = [f["event"]["type"] for f in frames]
    assert kinds.count("run.started") == 2
    assert kinds.index("run.retrying") < len(kinds) - 1 - kinds[::-1].index("run.started")
    second_attempt = [
        f["event"]["text"]
        for f in frames
        if f["event"]["type"] == "message.delta" and f["event"]["attempt"] == 2
    ]
    assert "".join(second_attempt) == scripted_reply("once more", 20)
    assert view["messages"][-1]["content"] == scripted_reply("once more", 20)


class CancelledAtTheEnd:
    """Streams text with no sentence end, then the run is cancelled before it can finish."""

    name = "cancelled-at-the-end"

    def __init__(self, store: object, thread_id: str) -> None:
        self.store, self.thread_id, self.run_id = store, thread_id, ""

    async def stream(self, prompt: object) -> AsyncIterator[Part]:
        yield TextPart("Hello there")
        key = self.store.keys.partition(self.thread_id).run(self.run_id)  # type: ignore[attr-defined]
        await self.store.redis.hset(key, "cancel", "1")  # type: ignore[attr-defined]


async def test_text_held_back_at_a_cancel_is_kept(store: EventStore, settings: Settings) -> None:
    from service import commands

    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hi", "assistant")
    llm = CancelledAtTheEnd(store, thread_id)
    llm.run_id = sent.run_id
    await Worker(store.backend, store, llm, settings).run_once()  # type: ignore[arg-type]
    view = await ViewStore(store).current(thread_id)
    reply = view.messages[-1]
    assert (reply.status, reply.content) == ("cancelled", "Hello there")
