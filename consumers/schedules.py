"""Recurring workflow runs, by cron expression or interval, fired once across workers.

A schedule's next fire time lives in Redis. Any worker may fire a due
schedule: it sends the run's message with a client id made of the schedule
and the due time (a second sender is a no-op), then moves the next fire time
on by compare-and-set. So a fire is never doubled, and a worker dying
between the two steps only means the next worker sends the same no-op again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from consumers import workflows
from consumers.workflows.cron import CronError, next_fire, parse
from slipstream import errors, threads
from slipstream.clock import Clock
from slipstream.keys import PREFIX
from slipstream.store import EventStore

log = logging.getLogger("slipstream.schedules")

DEFINITIONS = f"{PREFIX}:{{schedules}}:defs"  # hash: name -> Schedule JSON
NEXT = f"{PREFIX}:{{schedules}}:next"  # hash: name -> next fire (ms)
ON_TIME_MS = 60_000  # a fire this late still counts as on time under "skip"

_ADVANCE = """
if redis.call("HGET", KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
return 1
"""


class Schedule(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    workflow: str
    cron: str | None = Field(None, description="five fields, UTC, e.g. '0 * * * *'")
    every_s: int | None = Field(None, ge=1, description="or an interval in seconds")
    input: str = Field("", max_length=32 * 1024, description="the message each run gets")
    missed: Literal["skip", "run_once"] = Field(
        "skip", description="after downtime: skip the missed fires, or run once for them"
    )

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give exactly one of cron and every_s")
        if self.cron is not None:
            try:
                parse(self.cron)
            except CronError as exc:
                raise ValueError(str(exc)) from None
        if workflows.get(self.workflow) is None:
            raise ValueError(f"no workflow named {self.workflow!r}; known: {workflows.names()}")
        return self

    @property
    def thread_id(self) -> str:
        """Each schedule's runs go to one thread, with an id every worker derives alike."""
        return "s" + hashlib.sha256(self.name.encode()).hexdigest()[:16]

    def next_after(self, ms: int) -> int:
        if self.every_s is not None:
            return ms + self.every_s * 1000
        after = datetime.fromtimestamp(ms / 1000, tz=UTC)
        return int(next_fire(self.cron or "", after).timestamp() * 1000)


class ScheduleState(BaseModel):
    schedule: Schedule
    next_ms: int | None


_IN_CODE: dict[str, Schedule] = {}


def schedule(**definition: object) -> Schedule:
    """Declare a schedule in code; workers create it in Redis when they start."""
    made = Schedule.model_validate(definition)
    _IN_CODE[made.name] = made
    return made


class Schedules:
    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store = store
        self.redis = store.redis
        self.clock = clock
        self._advance = self.redis.register_script(_ADVANCE)

    async def ensure_declared(self) -> None:
        for declared in _IN_CODE.values():
            await self.put(declared, replace=False)

    async def put(self, definition: Schedule, *, replace: bool = True) -> ScheduleState:
        """Create (or replace) a schedule; its first fire is the next one from now."""
        with contextlib.suppress(errors.ThreadExists):
            await threads.create_thread_with_id(
                self.store, definition.thread_id, f"Schedule: {definition.name}"
            )
        if replace:
            await self.redis.hset(DEFINITIONS, definition.name, definition.model_dump_json())
            await self.redis.hset(NEXT, definition.name, definition.next_after(self.clock.now_ms()))
        else:
            created = await self.redis.hsetnx(
                DEFINITIONS, definition.name, definition.model_dump_json()
            )
            if created:
                await self.redis.hset(
                    NEXT, definition.name, definition.next_after(self.clock.now_ms())
                )
        return (await self.get(definition.name)) or ScheduleState(schedule=definition, next_ms=None)

    async def get(self, name: str) -> ScheduleState | None:
        raw, next_ms = await self.redis.hget(DEFINITIONS, name), await self.redis.hget(NEXT, name)
        if raw is None:
            return None
        return ScheduleState(
            schedule=Schedule.model_validate_json(raw), next_ms=int(next_ms) if next_ms else None
        )

    async def all(self) -> list[ScheduleState]:
        found = []
        for name in sorted(await self.redis.hkeys(DEFINITIONS)):
            state = await self.get(str(name))
            if state is not None:
                found.append(state)
        return found

    async def delete(self, name: str) -> bool:
        removed = await self.redis.hdel(DEFINITIONS, name)
        await self.redis.hdel(NEXT, name)
        return bool(removed)

    async def fire_due(self) -> int:
        """Start a run for every due schedule; returns how many this call started."""
        fired = 0
        now = self.clock.now_ms()
        for name, raw_next in (await self.redis.hgetall(NEXT)).items():
            name, raw_next = str(name), str(raw_next)
            due = int(raw_next)
            if due > now:
                continue
            state = await self.get(name)
            if state is None:
                continue
            definition = state.schedule
            late = now - due > ON_TIME_MS
            if not late or definition.missed == "run_once":
                sent = await threads.send_message(
                    self.store,
                    definition.thread_id,
                    definition.input or f"Scheduled run of {definition.name}",
                    definition.workflow,
                    client_id=f"schedule.{name}.{due}",
                )
                fired += 0 if sent.duplicate else 1
            else:
                log.info("schedule %s: skipped the fire due at %d (missed: skip)", name, due)
            upcoming = definition.next_after(max(due, now))
            await self._advance(keys=[NEXT], args=[name, raw_next, upcoming])
        return fired
