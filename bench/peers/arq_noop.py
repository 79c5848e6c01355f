"""arq as a peer of bench.versus: a job that does nothing.

    python -m bench.peers.arq_noop work REDIS_URL default|tuned   # a worker, until SIGTERM
    python -m bench.peers.arq_noop enqueue REDIS_URL JOBS         # queue JOBS no-op jobs

`work` runs one arq worker (`arq.run_worker`, what the `arq` command runs)
with WorkerSettings (arq's defaults: 10 jobs at once, a poll every 0.5 s) or
TunedWorkerSettings (50 at once, a poll every 10 ms). It reports on stdout, at
most every 10 ms and only when it changed, one JSON line: {"done": jobs
finished so far, "first": when the first finished, "last": when the latest
finished}, times on CLOCK_MONOTONIC (Python's time.monotonic), which every
process on the machine shares. A job counts as finished in arq's
after_job_end hook, once its result is stored. Nothing of this touches Redis,
so the command counts are arq's own.

Runs in the peers' venv (.venv/peers), never in Slipstream's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, ClassVar

from arq import create_pool, run_worker
from arq.connections import RedisSettings

REPORT_S = 0.01


class Progress:
    done = 0
    first: float | None = None
    last: float | None = None


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def after_job_end(ctx: dict[str, Any]) -> None:
    now = time.monotonic()
    Progress.done += 1
    Progress.first = Progress.first or now
    Progress.last = now


async def report() -> None:
    reported = 0
    while True:
        await asyncio.sleep(REPORT_S)
        if Progress.done != reported:
            reported = Progress.done
            line = {"done": reported, "first": Progress.first, "last": Progress.last}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()


async def on_startup(ctx: dict[str, Any]) -> None:
    ctx["reporter"] = asyncio.create_task(report())


class WorkerSettings:
    """arq's defaults."""

    functions: ClassVar[list[Any]] = [noop]
    on_startup = on_startup
    after_job_end = after_job_end
    redis_settings = RedisSettings()


class TunedWorkerSettings:
    """More jobs at once and a shorter poll, for many short jobs.

    Not a subclass: arq reads the settings class's own __dict__, not inherited ones.
    """

    functions: ClassVar[list[Any]] = [noop]
    on_startup = on_startup
    after_job_end = after_job_end
    redis_settings = RedisSettings()
    max_jobs = 50
    poll_delay = 0.01


async def enqueue(settings: RedisSettings, jobs: int) -> None:
    pool = await create_pool(settings)
    try:
        for start in range(0, jobs, 100):
            await asyncio.gather(*(pool.enqueue_job("noop") for _ in range(min(100, jobs - start))))
    finally:
        await pool.aclose()


def main() -> None:
    command, url = sys.argv[1], sys.argv[2]
    settings = RedisSettings.from_dsn(url)
    if command == "work":
        chosen = {"default": WorkerSettings, "tuned": TunedWorkerSettings}[sys.argv[3]]
        run_worker(chosen, redis_settings=settings)
    elif command == "enqueue":
        asyncio.run(enqueue(settings, int(sys.argv[3])))
    else:
        raise SystemExit(f"unknown command {command!r}: work or enqueue")


if __name__ == "__main__":
    main()
