"""Time as an input: workers and workflows read it from a clock they are given."""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    """This machine's clock. Nothing Redis judges (leases, timers) is timed by it."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)


def is_test_clock(clock: Clock) -> bool:
    """A clock other than the machine's stands in for Redis's time (tests move it)."""
    return not isinstance(clock, SystemClock)


class RedisClock:
    """The time timers are due by and workflows see: Redis's (TIME), as for leases.

    Workers whose clocks differ then agree on when a timer is due, and a worker
    whose clock is an hour off still schedules a 500 ms retry 500 ms ahead. A
    test clock given in place of the machine's is read instead.
    """

    def __init__(self, redis: Redis, clock: Clock) -> None:
        self.redis = redis
        self.stand_in = clock if is_test_clock(clock) else None

    async def now_ms(self) -> int:
        if self.stand_in is not None:
            return self.stand_in.now_ms()
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000
