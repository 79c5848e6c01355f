"""Which consumers of a group are alive, so the dead ones can be forgotten.

Every worker and projector process joins its consumer groups under a name of
its own (`host:pid:nonce`), so each restart adds a consumer. A process
records itself in a registry (a sorted set of name -> last seen, ms) every
few seconds; consumers that are in no registry entry younger than
`LIVE_WITHIN_MS` and hold no pending entries are deleted from the group, so
`XINFO CONSUMERS` stays short and readable. The registry itself is trimmed
by the same pass, so both stay bounded by the number of live processes.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

LIVE_WITHIN_MS = 15_000


async def register(redis: Redis, registry: str, name: str) -> None:
    await redis.zadd(registry, {name: int(time.time() * 1000)})


async def forget_dead_consumers(
    redis: Redis, registry: str, streams: list[str], group: str, me: str
) -> int:
    """Delete the group's consumers of processes gone quiet that hold no work."""
    cutoff = int(time.time() * 1000) - LIVE_WITHIN_MS
    live = set(await redis.zrangebyscore(registry, cutoff, "+inf"))
    await redis.zremrangebyscore(registry, "-inf", cutoff)
    forgotten = 0
    for stream in streams:
        for consumer in await redis.xinfo_consumers(stream, group):
            name = str(consumer["name"])
            if consumer["pending"] == 0 and name != me and name not in live:
                await redis.xgroup_delconsumer(stream, group, name)
                forgotten += 1
    return forgotten
