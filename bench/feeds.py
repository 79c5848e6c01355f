"""Watching the partition feeds from a benchmark: counts without polling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from slipstream.store import EventStore


async def feed_ends(store: EventStore) -> dict[str, str]:
    """Each partition feed's last id: read from there to see only what comes next."""
    ends: dict[str, str] = {}
    for part in store.keys.all():
        last = await store.redis.xrevrange(part.feed, count=1)
        ends[part.feed] = last[0][0] if last else "0-0"
    return ends


async def count_until(
    store: EventStore,
    feeds: dict[str, str],
    done: Callable[[Counter[str]], bool],
    *,
    classify: Callable[[dict[str, str]], str | None] = lambda fields: fields.get("type"),
) -> Counter[str]:
    """Count feed entries by `classify` as they arrive until `done(counts)` holds."""
    counts: Counter[str] = Counter()
    reader = store.backend.reader()
    try:
        while not done(counts):
            reply = await reader.xread(feeds, block=30_000, count=5000)
            if not reply:
                raise TimeoutError(f"nothing new for 30 s; counted {dict(counts)}")
            for feed, entries in reply:
                feeds[feed] = entries[-1][0]
                counts.update(k for _, fields in entries if (k := classify(fields)) is not None)
    finally:
        await store.backend.release(reader)
    return counts
