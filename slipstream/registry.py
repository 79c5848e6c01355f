"""Which consumers of a group are alive, so the dead ones can be forgotten.

Every worker and projector process joins its consumer groups under a name of
its own (`host:pid:nonce`), so each restart adds a consumer. A process
records itself in a registry (a sorted set of name -> last seen, by Redis's
clock) every few seconds; consumers that are in no registry entry younger
than `LIVE_WITHIN_MS` and hold no pending entries are deleted from the group,
so `XINFO CONSUMERS` stays short and readable. The registry itself is trimmed
by the same pass, so both stay bounded by the number of live processes.
"""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis

LIVE_WITHIN_MS = 15_000

_lua = resources.files("slipstream").joinpath
_REGISTER = _lua("lua/register.lua").read_text()
_FORGET = _lua("lua/forget_consumers.lua").read_text()


async def register(redis: Redis, registry: str, name: str) -> None:
    await redis.register_script(_REGISTER)(keys=[registry], args=[name])


async def forget_dead_consumers(
    redis: Redis, registry: str, streams: list[str], group: str, me: str
) -> int:
    """Delete the group's consumers of processes gone quiet that hold no work."""
    seconds, micros = await redis.time()
    cutoff = int(seconds) * 1000 + int(micros) // 1000 - LIVE_WITHIN_MS
    live = set(await redis.zrangebyscore(registry, cutoff, "+inf"))
    await redis.zremrangebyscore(registry, "-inf", cutoff)
    forget = redis.register_script(_FORGET)
    forgotten = 0
    for stream in streams:
        quiet = [
            str(consumer["name"])
            for consumer in await redis.xinfo_consumers(stream, group)
            if consumer["pending"] == 0
            and str(consumer["name"]) != me
            and str(consumer["name"]) not in live
        ]
        if quiet:
            # Checked again inside the script: the look above is only a shortlist.
            forgotten += int(await forget(keys=[stream], args=[group, *quiet]))
    return forgotten
