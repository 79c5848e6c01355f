"""Recurring workflow runs, by cron expression or interval, fired once across workers.

A schedule's next fire time lives in Redis, written with its definition in
one script. Any worker may fire a due schedule: it sends the run's message
with a client id made of the schedule and the due time (a second sender is a
no-op), then moves the next fire time on by compare-and-set. So a fire is
never doubled, and a worker dying between the two steps only means the next
worker sends the same no-op again. "Due" is by the Redis server's clock, as
for leases, so workers with skewed clocks agree. A fire that is refused (its
thread's queue is full, say) is skipped and logged, and the schedule moves on
to its next fire: one schedule cannot hold up the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consumers import workflows
from consumers.workflows.cron import CronError, next_fire, parse
from slipstream import errors, threads, tracing
from slipstream.clock import Clock, RedisClock, SystemClock
from slipstream.keys import PREFIX
from slipstream.store import EventStore

log = logging.getLogger("slipstream.schedules")

# One hash tag, `{schedules}`: the scripts and MULTIs that name both share a slot.
DEFINITIONS = f"{PREFIX}:{{schedules}}:defs"  # hash: name -> Schedule JSON
NEXT = f"{PREFIX}:{{schedules}}:next"  # hash: name -> next fire (ms)
ON_TIME_MS = 60_000  # a fire this late still counts as on time under "skip"

# KEYS: NEXT; ARGV: name, the due time read, the next one ("" takes it off the table).
_ADVANCE = """
if redis.call("HGET", KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == "" then redis.call("HDEL", KEYS[1], ARGV[1]) return 1 end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# KEYS: DEFINITIONS, NEXT; ARGV: name, definition JSON, next fire (ms), "1" to replace.
# One script, so no reader sees a definition without its fire time or the reverse.
_PUT = """
if ARGV[4] ~= "1" and redis.call("HEXISTS", KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
redis.call("HSET", KEYS[2], ARGV[1], ARGV[3])
return 1
"""


def schedule_key(owner: str, name: str) -> str:
    """A schedule's field in the schedule hashes: names are each owner's own."""
    return f"{owner}/{name}" if owner else name


class Schedule(BaseModel):
    model_config = ConfigDict(strict=True)  # as the API's bodies: no guessing at types

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    workflow: str
    cron: str | None = Field(
        None, description="five fields or an @alias, UTC, as Vixie cron reads them: '0 * * * *'"
    )
    every_s: int | None = Field(None, ge=1, description="or an interval in seconds")
    input: str = Field("", max_length=32 * 1024, description="the message each run gets")
    missed: Literal["skip", "run_once"] = Field(
        "skip", description="after downtime: skip the missed fires, or run once for them"
    )
    owner: str = Field(
        "",
        description="the user who made it, set by the server ('' for schedules declared in "
        "code, or made without identity); its runs go to a thread of theirs",
    )

    @field_validator("cron")
    @classmethod
    def _fires(cls, cron: str | None) -> str | None:
        if cron is not None:
            try:
                parse(cron)
            except CronError as exc:
                raise ValueError(str(exc)) from None
        return cron

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give exactly one of cron and every_s")
        if workflows.get(self.workflow) is None:
            raise ValueError(f"no workflow named {self.workflow!r}; known: {workflows.names()}")
        return self

    @property
    def key(self) -> str:
        return schedule_key(self.owner, self.name)

    @property
    def thread_id(self) -> str:
        """Each schedule's runs go to one thread, with an id every worker derives alike."""
        return "s" + hashlib.sha256(self.key.encode()).hexdigest()[:16]

    def next_after(self, ms: int) -> int:
        """The first fire strictly after `ms`; CronError if there is none."""
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
    """Schedules in Redis. Now is the Redis server's time unless a test passes a clock;
    a `SystemClock` counts as no clock, since real time is the server's."""

    def __init__(self, store: EventStore, clock: Clock | None = None) -> None:
        self.store = store
        self.redis = store.redis
        self.clock = RedisClock(self.redis, clock or SystemClock())
        self._advance = self.redis.register_script(_ADVANCE)
        self._put = self.redis.register_script(_PUT)
        self._unreadable: set[str] = set()  # logged once each, not once a second
        self._refused: dict[str, int] = {}  # fires skipped in a row, logged at the first

    async def now_ms(self) -> int:
        return await self.clock.now_ms()

    async def ensure_declared(self) -> None:
        for declared in _IN_CODE.values():
            await self.put(declared, replace=False)

    async def put(self, definition: Schedule, *, replace: bool = True) -> ScheduleState:
        """Create (or replace) a schedule; its first fire is the next one from now.

        CronError if it never fires from now, with nothing written.
        """
        next_ms = definition.next_after(await self.now_ms())
        with contextlib.suppress(errors.ThreadExists):
            await threads.create_thread_with_id(
                self.store,
                definition.thread_id,
                f"Schedule: {definition.name}",
                owner=definition.owner,
            )
        await self._put(
            keys=[DEFINITIONS, NEXT],
            args=[definition.key, definition.model_dump_json(), next_ms, "1" if replace else "0"],
        )
        return (await self.get(definition.key)) or ScheduleState(schedule=definition, next_ms=None)

    async def get(self, name: str) -> ScheduleState | None:
        """The schedule whose `key` is `name`."""
        async with self.store.backend.pipeline_for(NEXT) as pipe:
            pipe.hget(DEFINITIONS, name)
            pipe.hget(NEXT, name)
            raw, next_ms = await pipe.execute()
        if raw is None:
            return None
        return ScheduleState(
            schedule=Schedule.model_validate_json(raw), next_ms=int(next_ms) if next_ms else None
        )

    async def all(self) -> list[ScheduleState]:
        async with self.store.backend.pipeline_for(NEXT) as pipe:
            pipe.hgetall(DEFINITIONS)
            pipe.hgetall(NEXT)
            definitions, fire_times = await pipe.execute()
        return [
            ScheduleState(
                schedule=Schedule.model_validate_json(definitions[name]),
                next_ms=int(fire_times[name]) if name in fire_times else None,
            )
            for name in sorted(definitions)
        ]

    async def delete(self, name: str) -> bool:
        async with self.store.backend.pipeline_for(NEXT) as pipe:
            pipe.hdel(DEFINITIONS, name)
            pipe.hdel(NEXT, name)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def fire_due(self) -> int:
        """Start a run for every due schedule; returns how many this call started."""
        fired = 0
        now = await self.now_ms()
        for name, raw_next in (await self.redis.hgetall(NEXT)).items():
            name, raw_next = str(name), str(raw_next)
            due = int(raw_next)
            if due > now:
                continue
            try:
                state = await self.get(name)
            except ValidationError as exc:
                # Say, a worker of an older deploy without the workflow: leave the
                # schedule to workers that can read it.
                if name not in self._unreadable:
                    self._unreadable.add(name)
                    log.error("schedule %s: cannot read its definition; not fired: %s", name, exc)
                continue
            if state is None:
                continue
            definition = state.schedule
            try:
                upcoming: int | str = definition.next_after(max(due, now))
            except CronError as exc:
                log.error("schedule %s: %s; it fires no more until replaced", name, exc)
                upcoming = ""
            late = now - due > ON_TIME_MS
            if not late or definition.missed == "run_once":
                try:
                    # No request asks for a scheduled run: its trace begins with the fire.
                    with tracing.span(
                        tracing.WORKER,
                        f"schedule {name}",
                        {"slipstream.thread": definition.thread_id, "slipstream.schedule": name},
                    ):
                        sent = await threads.send_message(
                            self.store,
                            definition.thread_id,
                            definition.input or f"Scheduled run of {definition.name}",
                            definition.workflow,
                            client_id=f"schedule.{name}.{due}",
                        )
                except errors.SlipstreamError as exc:
                    # Refused (its thread's queue is full, say): this fire is skipped
                    # and the schedule moves on, so it cannot hold up the others.
                    self._refused_fire(name, due, exc)
                else:
                    fired += 0 if sent.duplicate else 1
                    self._fire_went_through(name)
            else:
                log.info("schedule %s: skipped the fire due at %d (missed: skip)", name, due)
            await self._advance(keys=[NEXT], args=[name, raw_next, upcoming])
        return fired

    def _refused_fire(self, name: str, due: int, exc: errors.SlipstreamError) -> None:
        skipped = self._refused.get(name, 0) + 1
        self._refused[name] = skipped
        if skipped == 1:
            log.warning(
                "schedule %s: the fire due at %d was refused (%s); skipped, and so will "
                "later ones be while it is refused",
                name,
                due,
                exc,
            )
        else:
            log.debug("schedule %s: the fire due at %d was refused too (%s)", name, due, exc)

    def _fire_went_through(self, name: str) -> None:
        skipped = self._refused.pop(name, 0)
        if skipped:
            log.warning("schedule %s fires again, after %d refused fire(s)", name, skipped)
