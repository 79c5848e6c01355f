"""`python -m projections.reindex`: the search index of threads it does not hold yet.

The projector indexes a thread as it folds it, and one whose index is missing or
of another INDEX_VERSION in full at its next event; threads that see no event
after an upgrade are indexed by this. It writes only threads whose search doc
is not of the current version (so it is safe to run again, and beside a running
deployment: every write is the projector's own compare-and-set save). Needs
REDIS_URL (for the embedded Redis, its port is in `.slipstream/redis/port`).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from projections.search_index import INDEX_VERSION
from projections.views import ViewStore
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.store import EventStore


async def reindex(backend: Backend, settings: Settings) -> Counter[str]:
    """Index every thread whose index is missing or stale; returns what it did."""
    store = EventStore.from_settings(backend, settings)
    views = ViewStore(store, run_retention_s=settings.run_retention_s)
    done: Counter[str] = Counter()
    for part in store.keys.all():
        async for thread_id, _ in backend.client.zscan_iter(part.threads, count=500):
            thread_id = str(thread_id)
            held = await backend.client.hget(part.search_doc(thread_id), "v")
            if held is not None and str(held) == str(INDEX_VERSION):
                done["already indexed"] += 1
            elif await views.reindex(thread_id):
                done["indexed"] += 1
            else:
                done["busy (left to the projector)"] += 1
    return done


async def _main() -> None:
    from slipstream import partitions
    from slipstream.process import connect_or_exit, settings_or_exit

    settings = settings_or_exit()
    backend = connect_or_exit(settings, "reindex")
    try:
        await partitions.check(backend.client, settings.partitions, record=False)
        done = await reindex(backend, settings)
    finally:
        await backend.close()
    print(", ".join(f"{count} {what}" for what, count in sorted(done.items())) or "no threads")


if __name__ == "__main__":
    from slipstream.process import exit_on_startup_error

    with exit_on_startup_error("reindex"):
        asyncio.run(_main())
