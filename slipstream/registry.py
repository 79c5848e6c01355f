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
# KEYS: 1 registry   ARGV: 1 how recently (ms) a live process was seen.
# The registry's own node's clock, the one register.lua scores by: on a cluster a TIME
# of its own would be some node's, not necessarily the registry's.
_LIVE = """
local t = redis.call("TIME")
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. cutoff)
return redis.call("ZRANGEBYSCORE", KEYS[1], cutoff, "+inf")
"""


async def register(redis: Redis, registry: str, name: str) -> None:
    await redis.register_script(_REGISTER)(keys=[registry], args=[name])


async def live_processes(redis: Redis, registry: str) -> list[str]:
    """The processes seen within LIVE_WITHIN_MS; those seen before leave the registry."""
    reply = await redis.register_script(_LIVE)(keys=[registry], args=[LIVE_WITHIN_MS])
    return [str(name) for name in reply]


async def forget_dead_consumers(
    redis: Redis, registry: str, streams: list[str], group: str, me: str
) -> int:
    """Delete the group's consumers of processes gone quiet that hold no work."""
    live = {str(name) for name in await live_processes(redis, registry)}
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
