"""Time as an input: workers and workflows read it from a clock they are given."""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as aioredis


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


class ServerClock:
    """The Redis server's clock (TIME), the one leases use: processes whose own
    clocks are skewed still agree on what is due. Async, so not a `Clock`."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000
