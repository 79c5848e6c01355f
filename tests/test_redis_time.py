"""Timers are due by Redis's time: a worker whose own clock is an hour off still fires on time.

The skewed clocks here are SystemClocks (the machine's clock, an hour off),
not test clocks: a test clock stands in for Redis's time, the machine's
clock is trusted for nothing Redis judges. Timing is read from the stream
ids, which Redis stamps with its own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from consumers.llm.scripted import ScriptedLLM
from consumers.worker import Worker
from consumers.workflows import RetryPolicy, WorkflowContext, workflow
from projections.views import ViewStore
from service import commands
from slipstream.backend import Backend
from slipstream.clock import RedisClock, SystemClock
from slipstream.config import Settings
from slipstream.errors import ProviderError
from slipstream.keys import Keyspace
from slipstream.store import EventStore, Stored
from tests.fake_llm import FlakyLLM
from tests.test_workflows import FakeClock
from tests.waits import until

HOUR_MS = 3600 * 1000
failures: dict[str, int] = {}


class SkewedClock(SystemClock):
    """This machine's clock, `skew_ms` off."""

    def __init__(self, skew_ms: int) -> None:
        self.skew_ms = skew_ms

    def now_ms(self) -> int:
        return super().now_ms() + self.skew_ms


async def redis_ms(backend: Backend) -> int:
    seconds, micros = await backend.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def following(stored: list[Stored], event: Stored) -> list[Stored]:
    return stored[stored.index(event) + 1 :]


def stamp(stored: Stored) -> int:
    """When Redis wrote the event (the stream id's milliseconds)."""
    return int(stored.id.split("-")[0])


@pytest.fixture(autouse=True)
def _fresh_failures() -> None:
    failures.clear()


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def ended(store: EventStore, thread_id: str, run_id: str) -> str:
    status = ""

    async def done() -> bool:
        nonlocal status
        status = (await ViewStore(store).current(thread_id)).runs[run_id].status
        return status in ("completed", "failed", "cancelled")

    await until(done, within=10)
    return status


async def test_redis_clock_reads_redis_unless_a_test_clock_stands_in(backend: Backend) -> None:
    before = await redis_ms(backend)
    read = await RedisClock(backend.client, SkewedClock(HOUR_MS)).now_ms()
    assert before <= read <= await redis_ms(backend)
    fake = FakeClock()
    assert await RedisClock(backend.client, fake).now_ms() == fake.ms


@pytest.mark.parametrize("skew_ms", [HOUR_MS, -HOUR_MS])
async def test_a_retry_timer_is_due_its_back_off_after_redis_time(
    real_backend: Backend, settings: Settings, skew_ms: int
) -> None:
    store = EventStore(real_backend, Keyspace(settings.partitions))
    slow = dataclasses.replace(settings, retry_base_ms=60_000, retry_max_ms=60_000)
    llm = FlakyLLM([ProviderError("overloaded", retryable=True)])
    worker = Worker(real_backend, store, llm, slow, clock=SkewedClock(skew_ms))
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hello", "assistant")
    before = await redis_ms(real_backend)
    async with running(worker):

        async def retrying() -> bool:
            view = await ViewStore(store).current(thread_id)
            return view.runs[sent.run_id].status == "retrying"

        await until(retrying, within=10)
    after = await redis_ms(real_backend)
    timers = store.keys.partition(thread_id).timers
    due = int(await real_backend.client.zscore(timers, sent.run_id))
    delay = next(s.event for s in await store.read(thread_id) if s.event.type == "run.retrying")
    assert before + delay.delay_ms <= due <= after + delay.delay_ms  # type: ignore[attr-defined]


async def test_a_worker_an_hour_ahead_retries_after_its_back_off(
    real_backend: Backend, settings: Settings
) -> None:
    store = EventStore(real_backend, Keyspace(settings.partitions))
    quick = dataclasses.replace(settings, retry_base_ms=200, retry_max_ms=200)
    llm = FlakyLLM([ProviderError("overloaded", retryable=True)])
    worker = Worker(real_backend, store, llm, quick, clock=SkewedClock(HOUR_MS))
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hello", "assistant")
    async with running(worker):
        assert await ended(store, thread_id, sent.run_id) == "completed"
    stored = await store.read(thread_id)
    retrying = next(s for s in stored if s.event.type == "run.retrying")
    restarted = next(s for s in following(stored, retrying) if s.event.type == "run.started")
    delay_ms: int = retrying.event.delay_ms  # type: ignore[union-attr]
    # The timer is read by Redis TIME just before the retry event is written.
    assert delay_ms - 100 <= stamp(restarted) - stamp(retrying) < delay_ms + 1000


def flaky_once(name: str) -> str:
    failures[name] = failures.get(name, 0) + 1
    if failures[name] == 1:
        raise ConnectionError(f"{name} is down")
    return name


@workflow("test_skewed_timers", signals=("go",))
async def skewed_timers_flow(ctx: WorkflowContext, message: str) -> dict[str, object]:
    started = await ctx.now()
    await ctx.step("flaky", flaky_once, message, retry=RetryPolicy(base_ms=200, max_ms=200))
    await ctx.sleep(0.3)
    signal = await ctx.wait_for("go", timeout=timedelta(seconds=0.3))
    return {"started_ms": int(started.timestamp() * 1000), "timed_out": signal.timed_out}


async def test_a_workflow_on_a_worker_an_hour_ahead_keeps_redis_time(
    real_backend: Backend, settings: Settings
) -> None:
    """A step's back-off, a sleep, a wait's timeout and ctx.now() all go by Redis's time."""
    store = EventStore(real_backend, Keyspace(settings.partitions))
    worker = Worker(real_backend, store, ScriptedLLM(), settings, clock=SkewedClock(HOUR_MS))
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "skewed", "test_skewed_timers")
    async with running(worker):
        assert await ended(store, thread_id, sent.run_id) == "completed"
    assert failures["skewed"] == 2
    stored = await store.read(thread_id)

    first_start = next(s for s in stored if s.event.type == "run.started")
    result = (await ViewStore(store).current(thread_id)).runs[sent.run_id].result
    assert isinstance(result, dict) and result["timed_out"] is True
    assert abs(int(result["started_ms"]) - stamp(first_start)) < 1000  # not an hour ahead

    retrying = next(s for s in stored if s.event.type == "run.retrying")
    again = next(s for s in following(stored, retrying) if s.event.type == "run.started")
    delay_ms: int = retrying.event.delay_ms  # type: ignore[union-attr]
    assert delay_ms - 100 <= stamp(again) - stamp(retrying) < delay_ms + 1000

    for waiting_for, reason, length_ms in (("timer", "timer", 300), ("go", "timeout", 300)):
        waiting = next(
            s
            for s in stored
            if s.event.type == "run.waiting" and s.event.waiting_for == waiting_for  # type: ignore[union-attr]
        )
        until_ms: int = waiting.event.until_ms  # type: ignore[union-attr]
        resumed = next(
            s
            for s in stored
            if s.event.type == "run.resumed" and s.event.reason == reason  # type: ignore[union-attr]
        )
        # Due `length_ms` after the Redis time read just before the park was written.
        assert length_ms - 100 <= until_ms - stamp(waiting) <= length_ms
        assert 0 <= stamp(resumed) - until_ms < 1000
