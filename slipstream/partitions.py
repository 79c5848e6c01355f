"""The deployment's partition count, recorded in Redis by its first process.

A thread's partition is `crc32(thread_id) mod SLIPSTREAM_PARTITIONS`, and every
key of the thread carries that partition's hash tag. A process counting another
number of partitions would look for each thread in the wrong partition, and
workers and projectors would leave whole partitions unread: changing the number
orphans every thread. So the first process to start records its number in
`ss:partitions` (SET NX: one small key, for the deployment's life), and every
process compares its own with it before it does anything, refusing to start when
they differ. A new deployment may choose any number from 1 to 1024
(`config.MAX_PARTITIONS`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from slipstream.keys import PREFIX
from slipstream.process import StartupError
from slipstream.supervise import is_redis_fault

log = logging.getLogger("slipstream.partitions")

KEY = f"{PREFIX}:partitions"
RETRY_MAX_S = 2.0
SAY_AGAIN_S = 30.0  # how often a start still waiting for Redis says so


class PartitionsDiffer(StartupError):
    """This process counts another number of partitions than the deployment recorded."""


async def recorded(redis: Redis) -> int | None:
    """The number the deployment recorded; None before its first start."""
    raw = await redis.get(KEY)
    return int(raw) if raw is not None else None


async def check(redis: Redis, partitions: int, *, record: bool = True) -> None:
    """Record `partitions` if nothing is recorded yet (unless not to `record`: a tool
    that only looks); PartitionsDiffer if another number is."""
    if record:
        await redis.set(KEY, str(partitions), nx=True)
    held = await recorded(redis)
    if held is not None and held != partitions:
        raise PartitionsDiffer(
            f"SLIPSTREAM_PARTITIONS={partitions}, but this deployment's Redis holds its threads "
            f"in {held} partitions ({KEY}, recorded by its first start). A thread's partition "
            f"follows from that number, so with another one every thread would be looked for "
            f"in the wrong place. Set SLIPSTREAM_PARTITIONS={held}, or start a new deployment "
            f"on an empty Redis for {partitions}."
        )


async def check_when_reachable(redis: Redis, partitions: int, role: str) -> None:
    """`check`, waiting for Redis as long as it takes: a role may start before its Redis
    (or while a cluster fails over), as it may lose Redis later, and carries on then."""
    delay = 0.05
    said_at: float | None = None
    while True:
        try:
            await check(redis, partitions)
            if said_at is not None:
                log.info("%s: Redis answers; partitions checked", role)
            return
        except Exception as exc:
            if not is_redis_fault(exc):  # a cluster none of whose seeds answers is one too
                raise
            now = time.monotonic()
            if said_at is None or now - said_at >= SAY_AGAIN_S:
                log.warning(
                    "%s: cannot check the partition count with Redis yet (%s: %s); trying again",
                    role,
                    type(exc).__name__,
                    exc,
                )
                said_at = now
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_S)
