"""`python -m service`: the web process, or with no REDIS_URL the whole system.

Embedded (no REDIS_URL): web, worker and projector in one process on a
private redis-server from PATH, or on in-process fakeredis when there is none.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import uvicorn

from consumers.llm import provider_from_settings
from consumers.worker import Worker
from consumers.workflows.registry import load_modules_or_exit
from projections.projector import Projector
from service.app import create_app
from service.embedded import EmbeddedRedis
from service.runtime import Runtime
from slipstream import logs
from slipstream.backend import Backend
from slipstream.identity import consumer_name
from slipstream.process import settings_or_exit
from slipstream.supervise import keep_running

log = logging.getLogger("slipstream.service")


def with_embedded_redis(
    background: Callable[[Runtime], AsyncIterator[None]], embedded: EmbeddedRedis
) -> Callable[[Runtime], AsyncIterator[None]]:
    """Stop the private redis-server when the app shuts down.

    Inside the lifespan, because uvicorn re-raises SIGTERM once it has shut
    down, which ends the process before code after `uvicorn.run` could run.
    """

    async def wrapped(runtime: Runtime) -> AsyncIterator[None]:
        try:
            async for _ in background(runtime):
                yield
        finally:
            await runtime.backend.close()
            embedded.stop()

    return wrapped


async def run_worker_and_projector(runtime: Runtime) -> AsyncIterator[None]:
    """The embedded worker and projector, each kept running beside the web role."""
    stop = asyncio.Event()
    worker = Worker(
        runtime.backend,
        runtime.store,
        provider_from_settings(runtime.settings),
        runtime.settings,
        liveness=runtime.liveness,
    )
    projector = Projector(
        runtime.backend,
        runtime.store,
        consumer_name(),
        run_retention_s=runtime.settings.run_retention_s,
        liveness=runtime.liveness,
    )
    tasks = [
        asyncio.create_task(
            keep_running("worker", worker.run, stop, log, liveness=runtime.liveness)
        ),
        asyncio.create_task(
            keep_running("projector", projector.run, stop, log, liveness=runtime.liveness)
        ),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    settings = settings_or_exit()
    load_modules_or_exit(settings.workflow_modules)  # the deployment's own workflows
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.port)
    args = parser.parse_args()
    logs.setup("web")

    embedded: EmbeddedRedis | None = None
    if settings.redis_url:
        backend = Backend.connect(settings.redis_url)
        runtime = Runtime.build(settings, backend, roles=["web"])
        app = create_app(runtime)
    else:
        if EmbeddedRedis.available():
            embedded = EmbeddedRedis(settings.data_dir)
            backend = Backend.connect(embedded.start())
        else:
            log.warning(
                "NO redis-server ON PATH: running on in-process fakeredis. NOTHING SURVIVES A "
                "RESTART. Install redis-server (apt-get install redis-server) to keep your data."
            )
            backend = Backend.in_process()
        runtime = Runtime.build(settings, backend, roles=["web", "worker", "projector"])
        background: Callable[[Runtime], AsyncIterator[None]] = run_worker_and_projector
        if embedded is not None:
            background = with_embedded_redis(background, embedded)
        app = create_app(runtime, background=background)
    log.info(
        "Slipstream on http://%s:%d (redis: %s, llm: %s)",
        args.host,
        args.port,
        runtime.redis_label,
        settings.llm,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", ws_ping_interval=None)
    finally:
        if embedded is not None:
            embedded.stop()  # when startup failed before the lifespan could


if __name__ == "__main__":
    main()
