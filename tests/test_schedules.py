"""Schedules: cron arithmetic as a table, single fires across workers, catch-up after downtime."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from consumers.llm.scripted import ScriptedLLM
from consumers.schedules import DEFINITIONS, NEXT, Schedule, Schedules
from consumers.worker import Worker
from consumers.workflows.cron import CronError, next_fire, parse
from slipstream import threads
from slipstream.backend import Backend
from slipstream.clock import SystemClock
from slipstream.config import Settings
from slipstream.store import EventStore
from tests.harness import System, running_system
from tests.test_workflows import FakeClock

HOUR_MS = 3600 * 1000


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 * * * *", utc(2026, 11, 21, 10, 0), utc(2026, 11, 21, 11, 0)),
        ("*/15 9-17 * * 1-5", utc(2026, 11, 21, 10, 7), utc(2026, 11, 23, 9, 0)),  # Sat → Mon
        ("30 2 * * *", utc(2026, 12, 31, 3, 0), utc(2027, 1, 1, 2, 30)),
        ("5,35 * * * *", utc(2026, 11, 21, 10, 5), utc(2026, 11, 21, 10, 35)),
        # A step from a start runs to the end of the range: 5, 15, ..., 55.
        ("5/10 * * * *", utc(2026, 11, 21, 10, 7), utc(2026, 11, 21, 10, 15)),
        ("5/10 * * * *", utc(2026, 11, 21, 10, 55), utc(2026, 11, 21, 11, 5)),
        ("0 10-20/5 * * *", utc(2026, 11, 21, 15, 0), utc(2026, 11, 21, 20, 0)),
        # The day rule (Vixie cron): both day fields restricted, either may match ...
        ("0 12 1 * 0", utc(2026, 11, 21), utc(2026, 11, 22, 12, 0)),  # day 1 OR Sunday
        ("0 0 1-31/2 * 1", utc(2026, 11, 24), utc(2026, 11, 25)),  # odd day OR Monday
        # ... but a field that starts with * (*/2 too) is not restricted: both must.
        ("0 0 */2 * 1", utc(2026, 11, 24), utc(2026, 12, 7)),  # odd day AND Monday
        ("0 0 1 * */2", utc(2026, 11, 24), utc(2026, 12, 1)),  # 1st AND Sun/Tue/Thu/Sat
        ("0 0 * * 7", utc(2026, 11, 21), utc(2026, 11, 22)),  # 7 is Sunday too
        # Names, in any case, in lists and ranges.
        ("30 9 * JAN-MAR MON-FRI", utc(2026, 11, 24), utc(2027, 1, 1, 9, 30)),
        ("0 0 * * sun", utc(2026, 11, 24), utc(2026, 11, 29)),
        ("0 0 1 jan,Jul *", utc(2027, 1, 1), utc(2027, 7, 1)),
        # Aliases.
        ("@hourly", utc(2026, 11, 21, 10, 59, 59), utc(2026, 11, 21, 11, 0)),
        ("@daily", utc(2026, 11, 24, 13, 5), utc(2026, 11, 25)),
        ("@midnight", utc(2026, 11, 24, 13, 5), utc(2026, 11, 25)),
        ("@weekly", utc(2026, 11, 24), utc(2026, 11, 29)),  # Sunday
        ("@monthly", utc(2026, 11, 24), utc(2026, 12, 1)),
        ("@yearly", utc(2026, 11, 24), utc(2027, 1, 1)),
        ("@annually", utc(2026, 11, 24), utc(2027, 1, 1)),
        # Feb 29: leap years only, and 2100 is none.
        ("0 0 29 2 *", utc(2026, 3, 1), utc(2028, 2, 29)),
        ("0 0 29 2 *", utc(2096, 3, 1), utc(2104, 2, 29)),
        ("0 0 * 2 MON#5", utc(2026, 1, 1), utc(2044, 2, 29)),  # a fifth Monday in February
    ],
)
def test_next_fire(expression: str, after: datetime, expected: datetime) -> None:
    assert next_fire(expression, after) == expected


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("* * * *", "has 4 fields; cron needs 5"),
        ("* * * * * *", "has 6 fields"),
        ("61 * * * *", "cron '61 * * * *': minute 61 is out of range 0-59"),
        ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
        ("0 0 * * 8", "day-of-week 8 is out of range 0-7"),
        ("x * * * *", "minute 'x' is not a number"),
        ("0 0 * FOO *", "month 'FOO' is not a number or a name"),
        ("*/0 * * * *", "minute step '0' in '*/0' must be a whole number of 1 or more"),
        ("5-1 * * * *", "minute range '5-1' runs backwards"),
        ("1,,2 * * * *", "minute '' is not a value"),
        ("@reboot", "unknown alias"),
        ("0 0 30 2 *", "never fires: day 30 does not occur in month 2"),
        ("0 0 31 4,6 *", "never fires"),
        ("* * */20 * 1L", "never fires"),  # day 1 or 21, if the last Monday: no such day
    ],
)
def test_bad_cron_expressions(expression: str, says: str) -> None:
    with pytest.raises(CronError, match=re.escape(says)):
        parse(expression)
    with pytest.raises(CronError, match=re.escape(says)):
        next_fire(expression, utc(2026, 1, 1))


def test_a_schedule_needs_one_of_cron_and_interval_and_a_known_workflow() -> None:
    with pytest.raises(ValidationError, match="exactly one of cron and every_s"):
        Schedule(name="x", workflow="research")
    with pytest.raises(ValidationError, match="no workflow named 'nope'"):
        Schedule(name="x", workflow="nope", every_s=60)
    with pytest.raises(ValidationError, match="hour 25 is out of range 0-23"):
        Schedule(name="x", workflow="research", cron="0 25 * * *")
    with pytest.raises(ValidationError, match="never fires"):
        Schedule(name="x", workflow="research", cron="0 0 30 2 *")


def test_a_schedule_declared_in_code_that_never_fires_is_refused_at_import() -> None:
    from consumers.schedules import _IN_CODE, schedule

    with pytest.raises(ValidationError, match="never fires"):
        schedule(name="feb30", workflow="research", cron="0 0 30 2 *")
    assert "feb30" not in _IN_CODE


async def messages_sent(store: EventStore, thread_id: str) -> int:
    return sum(1 for s in await store.read(thread_id) if s.event.type == "message.sent")


async def test_a_due_schedule_fires_once_across_workers(
    store: EventStore, settings: Settings
) -> None:
    clock = FakeClock()
    schedules = Schedules(store, clock)
    state = await schedules.put(
        Schedule(name="hourly", workflow="research", every_s=3600, input="what changed?")
    )
    assert state.next_ms == clock.ms + HOUR_MS
    workers = [Worker(store.backend, store, ScriptedLLM(), settings, clock=clock) for _ in range(3)]
    assert sum(await asyncio.gather(*(w.schedules.fire_due() for w in workers))) == 0

    clock.advance(hours=1)
    assert sum(await asyncio.gather(*(w.schedules.fire_due() for w in workers))) == 1
    thread_id = state.schedule.thread_id
    assert await messages_sent(store, thread_id) == 1
    after = await schedules.get("hourly")
    assert after is not None and after.next_ms == clock.ms + HOUR_MS
    events = await store.read(thread_id)
    sent = next(s.event for s in events if s.event.type == "message.sent")
    assert (sent.content, sent.agent) == ("what changed?", "research")  # type: ignore[union-attr]


@pytest.mark.parametrize(("missed", "runs"), [("skip", 0), ("run_once", 1)])
async def test_after_downtime_missed_fires_are_skipped_or_run_once(
    store: EventStore, missed: str, runs: int
) -> None:
    clock = FakeClock()
    schedules = Schedules(store, clock)
    definition = Schedule(name=f"catch-{missed}", workflow="research", every_s=3600, missed=missed)  # type: ignore[arg-type]
    await schedules.put(definition)
    clock.advance(hours=5, minutes=30)  # every process was down for five fires
    assert await schedules.fire_due() == runs
    assert await messages_sent(store, definition.thread_id) == runs
    state = await schedules.get(definition.name)
    assert state is not None and state.next_ms == clock.ms + HOUR_MS
    assert await schedules.fire_due() == 0


async def test_schedules_declared_in_code_are_created_by_workers(
    store: EventStore, settings: Settings
) -> None:
    from consumers.schedules import _IN_CODE, schedule

    declared = schedule(name="nightly", workflow="research", cron="0 3 * * *")
    try:
        clock = FakeClock()
        worker = Worker(store.backend, store, ScriptedLLM(), settings, clock=clock)
        await worker.setup()
        state = await worker.schedules.get("nightly")
        assert state is not None and state.schedule == declared and state.next_ms
        clock.advance(days=3)  # a later start keeps the stored schedule and its fire time
        await Worker(store.backend, store, ScriptedLLM(), settings, clock=clock).setup()
        assert await worker.schedules.get("nightly") == state
    finally:
        _IN_CODE.pop("nightly")


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, settings, workers=False) as running:
        yield running


async def test_schedules_over_http(system: System) -> None:
    body = {"name": "digest", "workflow": "research", "cron": "0 8 * * 1", "input": "digest"}
    made = await system.http.put("/api/schedules/digest", json=body)
    assert made.status_code == 200 and made.json()["next_ms"] > 0
    assert [s["schedule"]["name"] for s in (await system.http.get("/api/schedules")).json()] == [
        "digest"
    ]
    bad = await system.http.put("/api/schedules/x", json={**body, "name": "x", "cron": "nope"})
    assert bad.status_code == 422 and "has 1 field; cron needs 5" in bad.json()["detail"]
    assert (await system.http.delete("/api/schedules/digest")).status_code == 204
    assert (await system.http.delete("/api/schedules/digest")).status_code == 404


async def test_a_schedule_that_never_fires_is_a_422_and_nothing_is_written(system: System) -> None:
    body = {"name": "digest", "workflow": "research", "cron": "0 8 * * 1"}
    assert (await system.http.put("/api/schedules/digest", json=body)).status_code == 200
    before = (await system.http.get("/api/schedules")).json()

    never = {"name": "feb30", "workflow": "research", "cron": "0 0 30 2 *"}
    refused = await system.http.put("/api/schedules/feb30", json=never)
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        "cron: cron '0 0 30 2 *' never fires: day 30 does not occur in month 2"
    )
    replaced = await system.http.put("/api/schedules/digest", json={**body, "cron": "0 0 31 4 *"})
    assert replaced.status_code == 422 and "never fires" in replaced.json()["detail"]

    assert (await system.http.get("/api/schedules")).json() == before
    store = system.runtime.store
    assert not await store.exists(Schedule.model_construct(name="feb30").thread_id)
    assert not await store.redis.hexists(DEFINITIONS, "feb30")
    assert not await store.redis.hexists(NEXT, "feb30")


async def test_a_put_that_cannot_compute_a_fire_leaves_no_trace(store: EventStore) -> None:
    """Past validation (a definition built without it): put refuses before any write."""
    unchecked = Schedule.model_construct(
        name="unchecked", workflow="research", cron="0 0 30 2 *", every_s=None, input=""
    )
    schedules = Schedules(store, FakeClock())
    with pytest.raises(CronError, match="never fires"):
        await schedules.put(unchecked)
    assert await store.redis.keys("*") == []


async def test_definition_and_fire_time_are_written_and_deleted_together(
    store: EventStore,
) -> None:
    """A reader never sees a definition without its fire time, nor the reverse."""
    schedules = Schedules(store, FakeClock())
    names = [f"s{i}" for i in range(5)]
    await schedules.put(Schedule(name="warm", workflow="research", every_s=60))  # the thread
    torn: list[object] = []
    writing = True

    async def write() -> None:
        nonlocal writing
        for round_ in range(40):
            for name in names:
                await schedules.put(Schedule(name=name, workflow="research", every_s=60 + round_))
            for name in names[::2]:
                await schedules.delete(name)
        writing = False

    async def read() -> None:
        while writing:
            async with store.redis.pipeline(transaction=True) as pipe:
                pipe.hkeys(DEFINITIONS)
                pipe.hkeys(NEXT)
                together, fire_together = await pipe.execute()
            if set(together) != set(fire_together):
                torn.append((together, fire_together))
            await asyncio.sleep(0)

    await asyncio.gather(write(), read(), read())
    assert torn == []
    states = await schedules.all()
    assert {s.schedule.name for s in states} == {"warm", "s1", "s3"}
    assert all(s.next_ms is not None for s in states)


class SkewedClock(SystemClock):
    """A worker whose own clock is off by `offset_ms`."""

    def __init__(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return super().now_ms() + self.offset_ms


async def redis_now_ms(store: EventStore) -> int:
    seconds, micros = await store.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_schedules_fire_by_redis_time_not_the_workers_clocks(
    store: EventStore, settings: Settings
) -> None:
    ahead, behind = (
        Worker(store.backend, store, ScriptedLLM(), settings, clock=SkewedClock(skew))
        for skew in (2 * HOUR_MS, -2 * HOUR_MS)
    )
    assert ahead.clock.now_ms() - await redis_now_ms(store) > HOUR_MS

    start = await redis_now_ms(store)
    state = await ahead.schedules.put(Schedule(name="hourly", workflow="research", every_s=3600))
    assert state.next_ms is not None
    assert start + HOUR_MS <= state.next_ms <= await redis_now_ms(store) + HOUR_MS
    # The worker two hours ahead would fire now by its own clock; Redis says not yet.
    assert await ahead.schedules.fire_due() + await behind.schedules.fire_due() == 0

    # Due by Redis: the worker two hours behind fires it, the other finds it done.
    await store.redis.hset(NEXT, "hourly", await redis_now_ms(store) - 1)
    assert sum(await asyncio.gather(behind.schedules.fire_due(), ahead.schedules.fire_due())) == 1
    assert await messages_sent(store, state.schedule.thread_id) == 1


async def test_a_definition_a_worker_cannot_read_is_left_alone_and_logged_once(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    schedules = Schedules(store, clock)
    gone = Schedule.model_construct(
        name="old", workflow="retired", cron=None, every_s=60, input="", missed="skip"
    )
    await store.redis.hset(DEFINITIONS, "old", gone.model_dump_json())
    await store.redis.hset(NEXT, "old", clock.ms - 1)
    assert await schedules.fire_due() == 0
    assert await schedules.fire_due() == 0
    assert await store.redis.hget(NEXT, "old") == str(clock.ms - 1)  # for workers that can
    assert sum("old: cannot read its definition" in r.getMessage() for r in caplog.records) == 1


async def test_a_schedule_whose_queue_is_full_skips_its_fire_and_holds_up_no_other(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "slipstream.schedules")
    full = EventStore(store.backend, store.keys, queue_max=1)
    clock = FakeClock()
    schedules = Schedules(full, clock)
    blocked = await schedules.put(Schedule(name="blocked", workflow="research", every_s=60))
    free = await schedules.put(Schedule(name="free", workflow="research", every_s=60))
    thread_id = blocked.schedule.thread_id
    for content in ("holds the thread", "waits in its queue"):  # no worker: both stay
        await threads.send_message(full, thread_id, content, "research")

    for fire in (1, 2):
        clock.advance(seconds=60)
        assert await schedules.fire_due() == 1  # the free one; the blocked one is refused
        assert await messages_sent(full, free.schedule.thread_id) == fire
        assert await messages_sent(full, thread_id) == 2
        for name in ("blocked", "free"):
            state = await schedules.get(name)
            assert state is not None and state.next_ms == clock.ms + 60_000, name
    refusals = [r for r in caplog.records if "blocked: the fire due at" in r.getMessage()]
    assert [r.levelname for r in refusals] == ["WARNING", "DEBUG"]  # said once, then counted

    await schedules.delete("free")
    # Room in the queue again (as if the waiting run had been taken): it fires.
    await full.redis.delete(full.keys.partition(thread_id).queue(thread_id))
    clock.advance(seconds=60)
    assert await schedules.fire_due() == 1
    assert "blocked fires again, after 2 refused fire(s)" in caplog.text
