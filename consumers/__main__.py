"""`python -m consumers`: a worker process (needs REDIS_URL).

`python -m consumers status` prints live workers and, per partition, queued,
pending and lagging work, timers and dead letters.
"""

from __future__ import annotations

import argparse
import asyncio

from consumers.agents import load_agents_or_exit
from consumers.llm import provider_from_settings
from consumers.tools import REGISTRY as TOOLS
from consumers.tools import load_modules_or_exit as load_tool_modules_or_exit
from consumers.tools.mcp_start import mcp_tools_or_exit
from consumers.worker import Worker
from consumers.workflows.registry import load_modules_or_exit
from slipstream import logs, metrics, partitions, process, roundtrips, tracing
from slipstream.keys import Keyspace
from slipstream.process import connect_or_exit, settings_or_exit, until_signalled
from slipstream.store import EventStore


async def work() -> None:
    settings = settings_or_exit()
    backend = connect_or_exit(settings, "worker")
    load_modules_or_exit(settings.workflow_modules)  # the deployment's own workflows
    load_tool_modules_or_exit(settings.tool_modules)  # the deployment's own tools
    # After the workflows and tools: names may not clash, and listed tools must exist.
    load_agents_or_exit(settings.agents_file, known_tools=TOOLS.names())
    store = EventStore.from_settings(backend, settings)
    worker = Worker(backend, store, provider_from_settings(settings), settings)
    counted = roundtrips.counting()  # for the benchmark only (SLIPSTREAM_ROUNDTRIPS_FILE)
    try:
        # The MCP servers' sessions live as long as the worker; their tools are
        # checked against what agents name once the servers have listed them.
        async with mcp_tools_or_exit(settings.agents_file):
            # Redis last: a mistake in the deployment's files stops the worker at
            # once, even while its Redis cannot be reached yet.
            await partitions.check_when_reachable(backend.client, settings.partitions, "worker")
            await until_signalled(worker.run)
    finally:
        await backend.close()
        if counted is not None:
            counter, path = counted
            counter.write(path, sum(worker.stats[end] for end in roundtrips.RUN_ENDS))


async def show_status() -> None:
    from consumers import status  # not on a worker's start

    settings = settings_or_exit()
    backend = connect_or_exit(settings, "status")
    try:
        await partitions.check(backend.client, settings.partitions, record=False)
        print(status.render(await status.gather(backend, Keyspace(settings.partitions))))
    finally:
        await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m consumers", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["work", "status"], default="work")
    args = parser.parse_args()
    if args.command == "status":
        with process.exit_on_startup_error("status"):
            asyncio.run(show_status())
        return
    process.on_signals("worker")
    logs.setup("worker")
    with process.exit_on_startup_error("worker"):
        tracing.setup("worker")
        settings = settings_or_exit()
        # Bound first, as the web role binds its port: a taken port starts nothing.
        with metrics.serving(settings.metrics_host, settings.metrics_port):
            asyncio.run(work())


if __name__ == "__main__":
    main()
