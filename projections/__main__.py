"""`python -m projections`: a projector process (needs REDIS_URL)."""

from __future__ import annotations

import asyncio

from projections.projector import Projector
from slipstream import logs, metrics, partitions, process, tracing
from slipstream.identity import consumer_name
from slipstream.process import connect_or_exit, settings_or_exit, until_signalled
from slipstream.store import EventStore


async def project() -> None:
    settings = settings_or_exit()
    backend = connect_or_exit(settings, "projector")
    await partitions.check_when_reachable(backend.client, settings.partitions, "projector")
    store = EventStore.from_settings(backend, settings)
    projector = Projector(
        backend,
        store,
        consumer_name(),
        run_retention_s=settings.run_retention_s,
        compact_after_s=settings.compact_after_s,
    )
    try:
        await until_signalled(projector.run)
    finally:
        await backend.close()


def main() -> None:
    process.on_signals("projector")
    logs.setup("projector")
    with process.exit_on_startup_error("projector"):
        tracing.setup("projector")
        settings = settings_or_exit()
        # Bound first, as the web role binds its port: a taken port starts nothing.
        with metrics.serving(settings.metrics_host, settings.metrics_port):
            asyncio.run(project())


if __name__ == "__main__":
    main()
