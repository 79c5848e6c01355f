"""`python -m consumers status`: what the workers are doing, per partition."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from redis.exceptions import ResponseError

from slipstream.backend import Backend
from slipstream.keys import WORKER_REGISTRY, WORKERS_GROUP, Keyspace

LIVE_WITHIN_MS = 15_000


@dataclass(frozen=True)
class PartitionStatus:
    number: int
    queued: int  # entries in the work stream
    pending: int  # delivered to a worker, not yet acked
    lag: int | None  # entries not yet delivered (None: Redis cannot tell)
    consumers: int
    timers: int
    next_timer_in_ms: int | None
    dead: int
    active_runs: int  # runs holding their agent's lane in a thread (one per thread and agent)


@dataclass(frozen=True)
class Status:
    workers: list[tuple[str, int]]  # name, ms since last seen
    partitions: list[PartitionStatus]


async def gather(backend: Backend, keyspace: Keyspace) -> Status:
    redis = backend.client
    now_ms = int(time.time() * 1000)
    seen = cast(
        list[tuple[str, float]],
        await redis.zrangebyscore(
            WORKER_REGISTRY, now_ms - LIVE_WITHIN_MS, "+inf", withscores=True
        ),
    )
    workers = [(str(name), now_ms - int(score)) for name, score in seen]
    partitions = []
    for part in keyspace.all():
        try:
            groups = await redis.xinfo_groups(part.work)
        except ResponseError:  # no such key yet
            groups = []
        group = next((g for g in groups if g["name"] == WORKERS_GROUP), None)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xlen(part.work)
            pipe.zcard(part.timers)
            pipe.zrange(part.timers, 0, 0, withscores=True)
            pipe.xlen(part.dead)
            pipe.hlen(part.active)
            queued, timers, head, dead, active = await pipe.execute()
        partitions.append(
            PartitionStatus(
                number=part.number,
                queued=int(queued),
                pending=int(group["pending"]) if group else 0,
                lag=group.get("lag") if group else 0,
                consumers=int(group["consumers"]) if group else 0,
                timers=int(timers),
                next_timer_in_ms=int(head[0][1]) - now_ms if head else None,
                dead=int(dead),
                active_runs=int(active),
            )
        )
    return Status(workers=workers, partitions=partitions)


def render(status: Status) -> str:
    lines = [f"live workers: {len(status.workers)}"]
    lines += [f"  {name}  seen {ago / 1000:.1f}s ago" for name, ago in status.workers]
    header = (
        "partition",
        "queued",
        "pending",
        "lag",
        "consumers",
        "timers",
        "next timer",
        "dead",
        "active runs",
    )
    lines.append("")
    lines.append("  ".join(f"{h:>12}" for h in header))
    for p in status.partitions:
        next_timer = "-" if p.next_timer_in_ms is None else f"{p.next_timer_in_ms / 1000:.1f}s"
        cells = (
            f"p{p.number:02d}",
            p.queued,
            p.pending,
            "?" if p.lag is None else p.lag,
            p.consumers,
            p.timers,
            next_timer,
            p.dead,
            p.active_runs,
        )
        lines.append("  ".join(f"{c!s:>12}" for c in cells))
    totals = status.partitions
    lines.append(
        f"\ntotal: {sum(p.pending for p in totals)} runs held by workers, "
        f"{sum(p.lag or 0 for p in totals)} waiting for one, "
        f"{sum(p.timers for p in totals)} timers, {sum(p.dead for p in totals)} dead letters"
    )
    return "\n".join(lines)
