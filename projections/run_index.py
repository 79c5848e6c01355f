"""Pages of projected runs, newest first, from the per-partition sorted sets.

The projector keeps, per partition, run ids by requested time (all runs, and
one set per status) beside the run summaries hash (see store_view.lua). A
page merges the partitions' sets below a cursor, so its cost depends on the
page size, not on how many runs were ever recorded. Filtering by agent has no
index: at most `scan` entries are looked at per page, and a short page with a
cursor means "more may follow".
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError
from redis.asyncio import Redis

from projections.thread_view import RunSummary
from slipstream.keys import Partition

_CURSOR = re.compile(r"^(\d{1,15}):([A-Za-z0-9_-]{1,64}\.[a-f0-9]{6,32})$")


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in newest-first order: the page goes on below it."""

    requested_at: int
    run_id: str

    def __str__(self) -> str:
        return f"{self.requested_at}:{self.run_id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR.match(text)
        if match is None:
            raise ValueError(
                f"cursor={text!r} is not a runs cursor; pass back the X-Next-Cursor of a page"
            )
        return cls(int(match.group(1)), match.group(2))


@dataclass(frozen=True)
class RunPage:
    runs: list[RunSummary]
    next: Cursor | None


Entry = tuple[int, str]  # (requested at, run id)


async def page(
    redis: Redis,
    partitions: Sequence[Partition],
    *,
    status: str | None,
    agent: str | None,
    limit: int,
    before: Cursor | None,
    scan: int = 2000,
) -> RunPage:
    def index(part: Partition) -> str:
        return part.runs_with_status(status) if status else part.runs_by_time

    found: list[RunSummary] = []
    position = before
    examined = 0
    while True:
        chunk = limit - len(found) if agent is None else max(limit, 100)
        candidates: list[tuple[Entry, Partition]] = []
        horizon: Entry | None = None  # below it, a partition may hold entries not fetched
        below = await asyncio.gather(
            *(_below(redis, index(part), position, chunk) for part in partitions)
        )
        for part, (entries, full) in zip(partitions, below, strict=True):
            candidates += ((entry, part) for entry in entries)
            if full and (horizon is None or entries[-1] > horizon):
                horizon = entries[-1]
        candidates.sort(key=lambda c: c[0], reverse=True)
        if horizon is not None:
            candidates = [c for c in candidates if c[0] >= horizon]
        summaries = await _summaries(redis, candidates)
        for (entry, _part), summary in zip(candidates, summaries, strict=True):
            examined += 1
            position = Cursor(*entry)
            if summary is None or (agent is not None and summary.agent != agent):
                continue  # trimmed meanwhile, or another agent's
            found.append(summary)
            if len(found) == limit:
                more = horizon is not None or entry != candidates[-1][0]
                return RunPage(found, position if more else None)
        if horizon is None:
            return RunPage(found, None)
        if examined >= scan:
            return RunPage(found, position)


async def _below(
    redis: Redis, key: str, position: Cursor | None, count: int
) -> tuple[list[Entry], bool]:
    """Up to `count` entries below `position`, newest first, and whether there may be more."""
    top: Any = "+inf" if position is None else position.requested_at
    limit = None if position is None else (position.requested_at, position.run_id)
    found: list[Entry] = []
    offset = 0
    while True:
        # Same-millisecond entries at or above the cursor come first and are skipped.
        reply = cast(
            list[tuple[str, float]],
            await redis.zrevrangebyscore(
                key, top, "-inf", start=offset, num=count, withscores=True
            ),
        )
        for member, score in reply:
            entry = (int(score), str(member))
            if limit is None or entry < limit:
                found.append(entry)
        if len(found) >= count:
            return found[:count], True
        if len(reply) < count:
            return found, False
        offset += len(reply)


async def _summaries(
    redis: Redis, candidates: list[tuple[Entry, Partition]]
) -> list[RunSummary | None]:
    by_part: dict[str, list[str]] = {}
    for (_, run_id), part in candidates:
        by_part.setdefault(part.runs, []).append(run_id)
    raws: dict[str, str | None] = {}
    async with redis.pipeline(transaction=False) as pipe:
        for key, ids in by_part.items():
            pipe.hmget(key, ids)
        for (_key, ids), values in zip(by_part.items(), await pipe.execute(), strict=True):
            raws.update(zip(ids, values, strict=True))
    result: list[RunSummary | None] = []
    for (_, run_id), _part in candidates:
        raw = raws.get(run_id)
        try:
            result.append(RunSummary.model_validate_json(raw) if raw else None)
        except ValidationError:
            result.append(None)  # the next save of its thread rewrites it
    return result
