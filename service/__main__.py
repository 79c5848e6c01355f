"""`python -m service`: the web process, or with no REDIS_URL the whole system.

Embedded (no REDIS_URL): web, worker and projector in one process on a
private redis-server from PATH, or on in-process fakeredis when there is none.

The port is bound first, so a start on a taken port has started nothing; then
the embedded redis-server, then the roles. A start that fails stops what it
started and exits with one line; see slipstream/process.py for the signals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn

from consumers.agents import load_agents_or_exit
from consumers.llm import provider_from_settings
from consumers.tools import REGISTRY as TOOLS
from consumers.tools import load_modules_or_exit as load_tool_modules_or_exit
from consumers.tools.mcp_start import mcp_tools_or_exit
from consumers.worker import Worker
from consumers.workflows.registry import load_modules_or_exit
from projections.projector import Projector
from service.app import create_app
from service.embedded import EmbeddedRedis
from service.runtime import Runtime
from service.ws_protocol import LiveWebSocketProtocol
from slipstream import logs, metrics, partitions, process, tracing
from slipstream.backend import Backend
from slipstream.identity import consumer_name
from slipstream.process import StartupError, settings_or_exit
from slipstream.supervise import keep_running

log = logging.getLogger("slipstream.service")

PROG = "slipstream"
WS_MAX_FRAME_BYTES = 64 * 1024
"""Clients send the sockets only pings: a bigger frame closes the socket (1009)."""
GRACEFUL_HTTP_S = 3
"""How long open requests and sockets get to finish when the web role stops."""


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
        compact_after_s=runtime.settings.compact_after_s,
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


def listen(host: str, port: int) -> socket.socket:
    """The web role's listening socket, bound before anything else starts."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupError(f"cannot listen on {where}: {_reason(exc)}") from None
    try:
        # Lets a restart bind while the last one's connections sit in TIME_WAIT; on
        # Linux it never lets two listeners share the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {where}: {_reason(exc)}") from None
    return sock


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) is loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # slipstream.process owns SIGTERM and SIGINT


async def serve(
    runtime: Runtime,
    background: Callable[[Runtime], AsyncIterator[None]] | None,
    sock: socket.socket,
    host: str,
) -> None:
    """The web role (and `background` beside it) until a signal stops them."""
    app = create_app(runtime, background=background, bound_host=host)
    config = uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through the root handler: its format, its mask
        ws_ping_interval=None,
        ws_max_size=WS_MAX_FRAME_BYTES,
        ws=LiveWebSocketProtocol,  # uvicorn's, with frames the live tail writes at once
        # The client address stays the connection's own: SLIPSTREAM_AUTH=header trusts a
        # user header by it, which X-Forwarded-For rewriting would let a client choose.
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_HTTP_S,
    )
    server = _Server(config)

    def stop() -> None:
        server.should_exit = True

    try:
        await partitions.check_when_reachable(
            runtime.backend.client, runtime.settings.partitions, "web"
        )
        async with contextlib.AsyncExitStack() as worker_tools:
            if background is not None:
                # The embedded worker's MCP servers, connected before it starts and
                # closed after it stops (consumers/tools/mcp_servers.py); a tool an
                # agent names that its server lacks stops the start with one line.
                await worker_tools.enter_async_context(
                    mcp_tools_or_exit(runtime.settings.agents_file)
                )
            with process.stopping_with(stop):
                try:
                    await server.serve(sockets=[sock])
                except SystemExit:  # uvicorn's way to say the lifespan failed, logged above
                    raise StartupError("the roles did not start (see the error above)") from None
    finally:
        await runtime.backend.close()


def main() -> None:
    if sys.argv[1:2] == ["users"]:
        from service import users_cli

        sys.exit(users_cli.main(sys.argv[2:]))
    if sys.argv[1:2] in (["inspect"], ["replay"]):
        from service import inspect_cli

        sys.exit(inspect_cli.main(sys.argv[1:]))
    if sys.argv[1:2] in (["export"], ["import"]):
        from service import transfer_cli

        sys.exit(transfer_cli.main(sys.argv[1:]))
    process.on_signals(PROG)
    with process.exit_on_startup_error(PROG):
        _start_and_serve()


def _start_and_serve() -> None:
    settings = settings_or_exit()
    load_modules_or_exit(settings.workflow_modules)  # the deployment's own workflows
    load_tool_modules_or_exit(settings.tool_modules)  # the deployment's own tools
    # After the workflows and tools: names may not clash, and listed tools must exist.
    load_agents_or_exit(settings.agents_file, known_tools=TOOLS.names())
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.port)
    args = parser.parse_args()
    logs.setup("web")
    tracing.setup("web")
    if settings.auth == "none" and not is_loopback(args.host):
        raise StartupError(
            f"will not listen on {args.host} with SLIPSTREAM_AUTH=none: anyone who can reach "
            "it would act as the local user. Set SLIPSTREAM_AUTH=tokens (then `python -m "
            "service users add NAME`) or header, or listen on 127.0.0.1"
        )

    with contextlib.ExitStack() as started:  # closed in reverse: roles, Redis, socket
        sock = listen(args.host, args.port)
        started.callback(sock.close)
        started.callback(metrics.process_exiting)  # its open sockets leave the sums
        background: Callable[[Runtime], AsyncIterator[None]] | None = None
        timeout_s = settings.redis_timeout_ms / 1000
        if settings.redis_url:
            backend = Backend.connect(settings.redis_url, timeout_s=timeout_s)
            runtime = Runtime.build(settings, backend, roles=["web"])
        else:
            if EmbeddedRedis.available():
                embedded = EmbeddedRedis(settings.data_dir)
                started.callback(embedded.stop)  # after the roles: they use it to stop
                process.before_forced_exit(embedded.abandon)
                backend = Backend.connect(embedded.start(), timeout_s=timeout_s)
            else:
                log.warning(
                    "NO redis-server ON PATH: running on in-process fakeredis. NOTHING SURVIVES "
                    "A RESTART. Install redis-server (apt-get install redis-server) to keep "
                    "your data."
                )
                backend = Backend.in_process()
            runtime = Runtime.build(settings, backend, roles=["web", "worker", "projector"])
            background = run_worker_and_projector
            # One process, three roles: each traced under its own service name.
            tracing.setup("worker")
            tracing.setup("projector")
        host, port = sock.getsockname()[:2]
        log.info(
            "Slipstream on http://%s:%d (redis: %s, llm: %s, %s)",
            f"[{host}]" if ":" in host else host,
            port,
            runtime.redis_label,
            settings.llm,
            runtime.auth.describe(),
        )
        asyncio.run(serve(runtime, background, sock, args.host))


if __name__ == "__main__":
    main()
