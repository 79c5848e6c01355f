"""Per-user limits that hold across every web process: they live in Redis.

- Sends a minute: a generic cell rate algorithm (GCRA) over one key per user: a
  user may send `SLIPSTREAM_SENDS_PER_MINUTE` messages at once and then one each
  60/limit seconds, never more in any minute. One Lua script, one round trip.
- Sockets: each open socket holds an entry in the user's sorted set, scored by
  when it lapses; it is renewed at every heartbeat and removed at close, so the
  sockets of a process killed with kill -9 lapse by themselves.
- Runs: the user's runs queued or going; each check drops those that ended.

Why scripts of our own and not the `limits` library: its Redis storage wants a
URL and a connection of its own, and the embedded mode runs on in-process
fakeredis, which has no URL; a script runs on the client every role already
has, and keeps to one key per call (a cluster's slot).

Every refusal is counted by reason (`Limits.refused`, shown by /healthz).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from slipstream.config import Settings

SENDS = "ss:{rate}:sends:"
SOCKETS = "ss:{rate}:sockets:"
RUNS = "ss:{rate}:runs:"
_TERMINAL = frozenset({"completed", "cancelled", "failed"})
RUNS_KEPT_S = 24 * 3600
"""How long a user's run list outlives its newest run (each check prunes it)."""

# KEYS[1]: the user's key. ARGV: 1 emission interval (µs, whole), 2 burst (requests).
# Microseconds, whole numbers: PX takes integers, and a limit of more than 60,000 a
# minute has an interval under a millisecond. Returns 0 when allowed (and counted),
# else the ms to wait.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allowed_at = tat - (burst - 1) * interval
if now < allowed_at then return math.ceil((allowed_at - now) / 1000) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return 0
"""

# KEYS[1]: the user's sockets. ARGV: 1 socket id, 2 lifetime (ms), 3 limit (0: renew only).
# Returns 1 when held, 0 when over the limit (or, renewing, no longer held).
_SOCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lifetime, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if limit == 0 then
  if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
elseif redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], now + lifetime, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lifetime)
return 1
"""


class LimitReached(Exception):
    """Over a limit: a 429 (or a socket's close) with when to try again."""

    def __init__(self, reason: str, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass
class Limits:
    settings: Settings
    redis: Redis
    refused: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._gcra = self.redis.register_script(_GCRA_LUA)
        self._socket = self.redis.register_script(_SOCKET_LUA)

    def refuse(self, reason: str, detail: str, retry_after_s: int) -> LimitReached:
        self.refused[reason] += 1
        return LimitReached(reason, detail, retry_after_s)

    async def take_send(self, user: str) -> None:
        """Count one message of `user`'s; LimitReached past SLIPSTREAM_SENDS_PER_MINUTE."""
        limit = self.settings.sends_per_minute
        interval_us = max(1, 60_000_000 // limit)
        wait_ms = int(await self._gcra(keys=[SENDS + user], args=[interval_us, limit]))
        if wait_ms > 0:
            raise self.refuse(
                "sends",
                f"{user} sent {limit} messages within a minute, the limit; "
                f"try again in {math.ceil(wait_ms / 1000)} s",
                math.ceil(wait_ms / 1000),
            )

    def socket_lifetime_ms(self) -> int:
        # Three heartbeats: renewed at each, so only a socket whose process died lapses.
        return int(3 * self.settings.heartbeat_s * 1000)

    async def hold_socket(self, user: str, socket_id: str) -> None:
        limit = self.settings.sockets_per_user
        held = await self._socket(
            keys=[SOCKETS + user], args=[socket_id, self.socket_lifetime_ms(), limit]
        )
        if not held:
            raise self.refuse(
                "sockets",
                f"{user} has {limit} sockets open, the limit; close one (another tab?)",
                int(self.settings.heartbeat_s),
            )

    async def renew_socket(self, user: str, socket_id: str) -> None:
        await self._socket(keys=[SOCKETS + user], args=[socket_id, self.socket_lifetime_ms(), 0])

    async def release_socket(self, user: str, socket_id: str) -> None:
        await self.redis.zrem(SOCKETS + user, socket_id)

    async def check_runs(self, user: str, run_key: Callable[[str], str]) -> None:
        """LimitReached if `user` has SLIPSTREAM_RUNS_PER_USER runs queued or going.

        `run_key` names a run's hash (its partition's); runs that ended or whose
        state expired leave the user's list.
        """
        key = RUNS + user
        listed = [str(r) for r in await self.redis.smembers(key)]
        if not listed:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for run_id in listed:
                pipe.hget(run_key(run_id), "status")
            statuses = await pipe.execute()
        ended = [r for r, s in zip(listed, statuses, strict=True) if s is None or s in _TERMINAL]
        if ended:
            await self.redis.srem(key, *ended)
        live = len(listed) - len(ended)
        limit = self.settings.runs_per_user
        if live >= limit:
            raise self.refuse(
                "runs",
                f"{user} has {live} runs queued or going, the limit is {limit}; "
                "wait for one to end, or cancel one",
                5,
            )

    async def add_runs(self, user: str, run_ids: list[str]) -> None:
        """Runs `user` just started, counted until they end."""
        if not run_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(RUNS + user, *run_ids)
            pipe.expire(RUNS + user, RUNS_KEPT_S)
            await pipe.execute()
