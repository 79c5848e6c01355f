"""Schedules: cron arithmetic as a table, single fires across workers, catch-up after downtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from consumers.llm.scripted import ScriptedLLM
from consumers.schedules import Schedule, Schedules
from consumers.worker import Worker
from consumers.workflows.cron import CronError, next_fire
from slipstream.backend import Backend
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
        ("@hourly", utc(2026, 11, 21, 10, 59, 59), utc(2026, 11, 21, 11, 0)),
        ("*/15 9-17 * * 1-5", utc(2026, 11, 21, 10, 7), utc(2026, 11, 23, 9, 0)),  # Sat → Mon
        ("30 2 * * *", utc(2026, 12, 31, 3, 0), utc(2027, 1, 1, 2, 30)),
        ("0 0 29 2 *", utc(2026, 3, 1), utc(2028, 2, 29)),
        ("0 12 1 * 0", utc(2026, 11, 21), utc(2026, 11, 22, 12, 0)),  # day 1 OR Sunday
        ("0 0 * * 7", utc(2026, 11, 21), utc(2026, 11, 22)),  # 7 is Sunday too
        ("5,35 * * * *", utc(2026, 11, 21, 10, 5), utc(2026, 11, 21, 10, 35)),
    ],
)
def test_next_fire(expression: str, after: datetime, expected: datetime) -> None:
    assert next_fire(expression, after) == expected


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("* * * *", "has 4 fields"),
        ("61 * * * *", "within 0-59"),
        ("x * * * *", "not a number"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_bad_cron_expressions(expression: str, says: str) -> None:
    with pytest.raises(CronError, match=says):
        next_fire(expression, utc(2026, 1, 1))


def test_a_schedule_needs_one_of_cron_and_interval_and_a_known_workflow() -> None:
    with pytest.raises(ValidationError, match="exactly one of cron and every_s"):
        Schedule(name="x", workflow="research")
    with pytest.raises(ValidationError, match="no workflow named 'nope'"):
        Schedule(name="x", workflow="nope", every_s=60)
    with pytest.raises(ValidationError, match="within 0-23"):
        Schedule(name="x", workflow="research", cron="0 25 * * *")


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
        worker = Worker(store.backend, store, ScriptedLLM(), settings, clock=FakeClock())
        await worker.setup()
        state = await worker.schedules.get("nightly")
        assert state is not None and state.schedule == declared
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
    assert bad.status_code == 422 and "fields" in bad.json()["detail"]
    assert (await system.http.delete("/api/schedules/digest")).status_code == 204
    assert (await system.http.delete("/api/schedules/digest")).status_code == 404
