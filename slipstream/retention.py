"""`python -m slipstream.retention`: lifetimes for keys written before they had one.

Earlier versions kept the dedupe keys of messages with a client id and of
signals with a signal id for good, and every finished run's hash too. This
gives each such dedupe key the resend window and each finished run's hash
the retention, counted from now. It touches only keys with no lifetime, so
it is safe to run more than once and beside a running deployment (needs
REDIS_URL; for the embedded Redis, its port is in `.slipstream/redis/port`).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import PREFIX

# Atomic, so a run restarted between the check and the expiry is left alone.
_EXPIRE_IF_FINISHED = """
local status = redis.call("HGET", KEYS[1], "status")
if (status == "completed" or status == "cancelled" or status == "failed")
    and redis.call("PTTL", KEYS[1]) == -1 then
  return redis.call("PEXPIRE", KEYS[1], ARGV[1])
end
return 0
"""
_EXPIRE_IF_FOREVER = """
if redis.call("PTTL", KEYS[1]) == -1 then return redis.call("PEXPIRE", KEYS[1], ARGV[1]) end
return 0
"""


async def backfill(backend: Backend, settings: Settings) -> Counter[str]:
    """Give lifetime-less dedupe keys and finished run hashes theirs; returns what it set."""
    redis = backend.client
    finished = redis.register_script(_EXPIRE_IF_FINISHED)
    forever = redis.register_script(_EXPIRE_IF_FOREVER)
    done: Counter[str] = Counter()
    async for key in redis.scan_iter(match=f"{PREFIX}:*:dedupe:*", count=1000):
        done["dedupe keys"] += int(
            await forever(keys=[key], args=[settings.dedupe_window_s * 1000])
        )
    async for key in redis.scan_iter(match=f"{PREFIX}:*:run:*", count=1000):
        done["finished run hashes"] += int(
            await finished(keys=[key], args=[settings.run_retention_s * 1000])
        )
    return done


async def _main() -> None:
    from slipstream.process import connect_or_exit, settings_or_exit

    settings = settings_or_exit()
    backend = connect_or_exit(settings, "retention")
    try:
        done = await backfill(backend, settings)
    finally:
        await backend.close()
    print(
        f"gave {done['dedupe keys']} dedupe keys the resend window "
        f"({settings.dedupe_window_s} s) and {done['finished run hashes']} finished run "
        f"hashes the retention ({settings.run_retention_s} s)"
    )


if __name__ == "__main__":
    asyncio.run(_main())
