"""`python -m consumers`: a worker process (needs REDIS_URL)."""

from __future__ import annotations

import asyncio

from consumers.llm import provider_from_settings
from consumers.worker import Worker
from slipstream import logs
from slipstream.keys import Keyspace
from slipstream.process import connect_or_exit, settings_or_exit, until_signalled
from slipstream.store import EventStore


async def main() -> None:
    settings = settings_or_exit()
    backend = connect_or_exit(settings, "worker")
    store = EventStore(backend, Keyspace(settings.partitions), feed_maxlen=settings.feed_maxlen)
    worker = Worker(backend, store, provider_from_settings(settings), settings)
    try:
        await until_signalled(worker.run)
    finally:
        await backend.close()


if __name__ == "__main__":
    logs.setup("worker")
    asyncio.run(main())
