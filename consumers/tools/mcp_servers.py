"""MCP tools: the agents file's `[mcp.<server>]` servers, their tools in the registry.

At worker start `mcp_tools(...)` connects to every server (stdio: the `command`
run as a child process; or streamable HTTP: `url`) with the official `mcp`
client, lists its tools and registers each as `mcp.<server>.<tool>`, with the
server's JSON Schema as its input schema (checked before the call, see
consumers/tools/schema_check.py) and its description. Agents' `mcp.<server>`
entries then become the tools the server listed (`consumers.agents.with_mcp_tools`);
an agent naming a tool a server did not list stops the worker at start.

A call is `session.call_tool`: the text parts of the result, joined, are the
tool's result; `isError` makes it an error result. Lifetimes:

- one session per server for the worker process, closed when it stops;
- a server that is unreachable at start is logged and the worker starts all the
  same: the tools agents name explicitly (`mcp.<server>.<tool>`) are registered
  with an open schema and answer errors until a call finds the server up again;
  `mcp.<server>` alone offers nothing (its tools are not known);
- a server that dies (the call fails with a closed connection) is reconnected by
  the next call; connecting is tried at most once per `RETRY_AFTER_S`, so a dead
  server costs each call a prompt error, not a wait;
- each call is bounded by the server's `timeout` (the registry enforces it);
  connecting is an attempt of its own (a task), bounded by the same but at least
  `MIN_CONNECT_S`, which a call waits on but does not own: the call's deadline
  or cancellation leaves the attempt running, calls meanwhile wait on that one
  attempt (each within its own deadline), and its failure starts the throttle.
  A server that hangs on connect is so tried once per `MIN_CONNECT_S +
  RETRY_AFTER_S`, not once per call;
- why a server is unreachable goes to the log, with its command (not its args,
  which may hold keys) or its URL without credentials or query; the call's
  error result, journaled and shown in the thread, says only
  `MCP server 'NAME' is unreachable: <exception class>`.

Each session is owned by a task of its own: the `mcp` transports are anyio
context managers that must be entered and left by one task, and calls come
from the runs' tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import mcp.types as mcp_types
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CONNECTION_CLOSED

from consumers.agents import AgentsFile, AgentsFileError, McpServer, loaded, use, with_mcp_tools
from consumers.tools.definition import Tool, schema_tool
from consumers.tools.errors import DuplicateTool, ToolDefinitionError, ToolError
from consumers.tools.registry import REGISTRY, ToolRegistry

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2.0
"""Least time between two attempts to connect to one server."""

MIN_CONNECT_S = 10.0
"""Connecting (starting a stdio server, initialising, listing) gets at least this
long, whatever the server's `timeout` for calls: a Python server takes seconds."""

MAX_TOOLS = 500
"""Tools taken from one server's listing (pages are followed up to this many)."""

OPEN_SCHEMA: dict[str, Any] = {"type": "object"}
"""The schema of a tool of a server not reached yet: the server checks the input."""

_Ready = tuple[ClientSession, list[mcp_types.Tool]]


class McpUnavailable(Exception):
    """A server could not be connected to, or its tools listed. Its text is what the
    model and the thread may see: the server's name and the exception's class."""


def tool_name(server: str, tool: str) -> str:
    return f"mcp.{server}.{tool}"


class McpConnection:
    """One server's session, (re)connected on demand, owned by a task of its own."""

    def __init__(self, name: str, config: McpServer, *, errlog: TextIO = sys.stderr) -> None:
        self.name = name
        self.config = config
        self.errlog = errlog  # a stdio server's stderr
        self.listed: list[mcp_types.Tool] | None = None  # at the first connection
        self._session: ClientSession | None = None
        self._owner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._attempt: asyncio.Task[_Ready] | None = None  # connecting, in flight
        self._failed_at: float | None = None
        self._failure = ""  # the last attempt's exception class

    @property
    def connected(self) -> bool:
        return self._session is not None and self._owner is not None and not self._owner.done()

    async def open(self) -> list[mcp_types.Tool]:
        """Connect and list the tools; `McpUnavailable` saying why when it cannot.
        Cancelling the caller (the worker's start) cancels the attempt."""
        async with self._lock:
            attempt = self._attempt or self._start_attempt_locked()
        _session, tools = await attempt
        return tools

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        """Call `tool`; its text, or `ToolError` with the server's error or why it failed."""
        session = await self._session_or_connect()
        try:
            result = await session.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                await self._drop(f"connection closed: {exc.error.message}")
                raise ToolError(
                    f"MCP server {self.name!r} closed the connection during the call "
                    "(it is reconnected on the next call)"
                ) from None
            raise ToolError(f"MCP server {self.name!r}: {exc.error.message}") from None
        except Exception as exc:
            # A broken transport (anyio's closed or broken streams, an HTTP error), or
            # something the session could not handle: start afresh on the next call.
            await self._drop(_why(exc))
            raise ToolError(
                f"MCP server {self.name!r}: the call failed: {_why(exc)} "
                "(it is reconnected on the next call)"
            ) from None
        text = text_of(result.content)
        if not text and result.structured_content is not None:
            # The spec asks servers for a text copy of structured results; not all do.
            text = json.dumps(result.structured_content, separators=(",", ":"))
        if result.is_error:
            raise ToolError(text or f"MCP tool {tool!r} of {self.name!r} failed (no message)")
        return text

    async def close(self) -> None:
        async with self._lock:
            attempt, self._attempt = self._attempt, None
            if attempt is not None:
                attempt.cancel()
                await asyncio.gather(attempt, return_exceptions=True)
            await self._drop_locked("closed")

    async def _session_or_connect(self) -> ClientSession:
        async with self._lock:
            if self.connected:
                assert self._session is not None
                return self._session
            attempt = self._attempt
            if attempt is None:
                await self._drop_locked("gone")
                if self._failed_at is not None:
                    ago = time.monotonic() - self._failed_at
                    if ago < RETRY_AFTER_S:
                        raise ToolError(
                            f"MCP server {self.name!r} is unreachable: {self._failure} "
                            f"(last tried {ago:.1f} s ago)"
                        )
                attempt = self._start_attempt_locked()
        try:
            # Shielded: the call's deadline or cancellation ends the wait, not the attempt.
            session, _tools = await asyncio.shield(attempt)
        except McpUnavailable as exc:
            raise ToolError(str(exc)) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if attempt.cancelled() and task is not None and not task.cancelling():
                # The attempt was cancelled, not this call: the servers are closing.
                raise ToolError(f"MCP server {self.name!r}: closed while connecting") from None
            raise
        return session

    def _start_attempt_locked(self) -> asyncio.Task[_Ready]:
        self._attempt = asyncio.create_task(self._connect(), name=f"mcp-{self.name}-connect")
        # Its waiters may all be gone (their deadlines passed) when it fails; the
        # failure is noted and logged by `_connect`, so retrieving it here is enough.
        self._attempt.add_done_callback(_retrieved)
        return self._attempt

    async def _connect(self) -> _Ready:
        """One attempt, run as a task of its own (`_attempt`) under its own deadline."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[_Ready] = loop.create_future()
        self._stop = asyncio.Event()
        owner = asyncio.create_task(self._own(ready, self._stop), name=f"mcp-{self.name}")
        try:
            async with asyncio.timeout(max(self.config.timeout, MIN_CONNECT_S)):
                session, tools = await asyncio.shield(ready)
        except BaseException as exc:
            self._stop.set()
            owner.cancel()
            # gather, not a suppressed await: this task's own cancellation still raises.
            await asyncio.gather(owner, return_exceptions=True)
            self._attempt = None
            if not isinstance(exc, Exception):  # cancelled (closing, or the start was)
                raise
            self._failed_at, self._failure = time.monotonic(), _kind(exc)
            log.warning(
                "MCP server %r (%s) is unreachable: %s", self.name, shown(self.config), _why(exc)
            )
            raise McpUnavailable(
                f"MCP server {self.name!r} is unreachable: {self._failure}"
            ) from None
        self._session, self._owner, self._failed_at = session, owner, None
        self._attempt = None
        if self.listed is None:
            self.listed = tools
        return session, tools

    async def _own(self, ready: asyncio.Future[_Ready], stop: asyncio.Event) -> None:
        """Enter the transport and the session, hand them over, hold them until `stop`."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                tools = await _all_tools(session)
                if not ready.done():
                    ready.set_result((session, tools))
                await stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("MCP server %s: the connection ended: %s", self.name, _why(exc))

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        if self.config.url is not None:
            return streamable_http_client(self.config.url)
        assert self.config.command is not None
        parameters = StdioServerParameters(
            command=self.config.command, args=list(self.config.args), env=self.config.env or None
        )
        return stdio_client(parameters, errlog=self.errlog)

    async def _drop(self, why: str) -> None:
        async with self._lock:
            await self._drop_locked(why)

    async def _drop_locked(self, why: str) -> None:
        owner, self._owner, self._session = self._owner, None, None
        if owner is None:
            return
        self._stop.set()
        try:
            # The owner leaves the session and the transport; stdio's shutdown is bounded.
            await asyncio.wait_for(asyncio.shield(owner), timeout=10)
        except TimeoutError:
            owner.cancel()
            await asyncio.gather(owner, return_exceptions=True)
        if why not in ("closed", "gone"):
            log.warning("MCP server %s dropped (%s); the next call reconnects", self.name, why)


def text_of(content: Iterable[mcp_types.ContentBlock]) -> str:
    """A result's text parts joined; other parts (images, resources) named, not sent."""
    parts: list[str] = []
    for block in content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        else:
            kind = getattr(block, "mime_type", None) or block.type
            parts.append(f"[{kind} content left out]")
    return "\n".join(parts)


async def _all_tools(session: ClientSession) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    while len(tools) < MAX_TOOLS:
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools[:MAX_TOOLS]


def _retrieved(task: asyncio.Task[_Ready]) -> None:
    if not task.cancelled():
        task.exception()


def shown(config: McpServer) -> str:
    """The server as the log shows it: its command without the args (they may hold
    keys), or its URL without credentials, query or fragment."""
    if config.url is None:
        return f"{config.command} (args not shown)" if config.args else str(config.command)
    url = urlsplit(config.url)
    host = url.hostname or ""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{host}{port}{url.path}"


def _innermost(exc: BaseException) -> BaseException:
    """The first leaf of anyio's exception groups: what actually went wrong."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _kind(exc: BaseException) -> str:
    """A failure as the model may see it: the exception's class, no message (a
    message may quote the command line, a path or a URL)."""
    return type(_innermost(exc)).__name__


def _why(exc: BaseException) -> str:
    """One line for a failure, for the log, looking inside anyio's exception groups."""
    exc = _innermost(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, MCPError):
        return exc.error.message
    detail = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class McpServers:
    """Every declared server's connection and the registry entries made for its tools."""

    def __init__(
        self,
        servers: Mapping[str, McpServer],
        registry: ToolRegistry = REGISTRY,
        *,
        errlog: TextIO = sys.stderr,
    ) -> None:
        self.connections = {
            name: McpConnection(name, config, errlog=errlog) for name, config in servers.items()
        }
        self.registry = registry
        self.registered: list[str] = []

    async def start(self) -> dict[str, list[str]]:
        """Connect to all at once and register their tools; returns each reachable
        server's tool names. An unreachable server is logged, not raised."""
        opened = await asyncio.gather(
            *(c.open() for c in self.connections.values()), return_exceptions=True
        )
        listed: dict[str, list[str]] = {}
        for connection, outcome in zip(self.connections.values(), opened, strict=True):
            if isinstance(outcome, McpUnavailable):
                # Why, and where it was looked for, is logged by the attempt.
                log.error("%s; its tools answer errors until it can be reached", outcome)
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            listed[connection.name] = [
                t.name for t in outcome if self._register(connection, t) is not None
            ]
            log.info(
                "MCP server %s: %d tools (%s)",
                connection.name,
                len(listed[connection.name]),
                ", ".join(listed[connection.name]),
            )
        return listed

    def register_unreached(self, names: Iterable[str]) -> None:
        """Tools named by agents whose server was unreachable: registered with an open
        schema, so a call reaches the server if it is up by then."""
        for name in names:
            server, _, tool = name.removeprefix("mcp.").partition(".")
            connection = self.connections.get(server)
            if connection is None or connection.listed is not None or not tool:
                continue
            if name not in self.registry:
                self._add(connection, tool, f"{tool} (MCP server {server})", OPEN_SCHEMA)

    async def close(self) -> None:
        for name in self.registered:
            self.registry.remove(name)
        self.registered.clear()
        await asyncio.gather(*(c.close() for c in self.connections.values()))

    def _register(self, connection: McpConnection, listed: mcp_types.Tool) -> Tool | None:
        description = listed.description or listed.title or listed.name
        try:
            return self._add(connection, listed.name, description, dict(listed.input_schema))
        except (ToolDefinitionError, DuplicateTool) as exc:
            log.error("MCP server %s: tool %r left out: %s", connection.name, listed.name, exc)
            return None

    def _add(
        self, connection: McpConnection, tool: str, description: str, schema: dict[str, Any]
    ) -> Tool:
        async def call(arguments: dict[str, Any]) -> str:
            return await connection.call(tool, arguments)

        name = tool_name(connection.name, tool)
        added = self.registry.add(
            schema_tool(name, description, schema, call, timeout_s=connection.config.timeout)
        )
        self.registered.append(name)
        return added


@contextlib.asynccontextmanager
async def mcp_tools(
    agents_file: AgentsFile,
    label: str,
    registry: ToolRegistry = REGISTRY,
    *,
    errlog: TextIO = sys.stderr,
) -> AsyncIterator[McpServers]:
    """The file's servers connected and their tools registered, for the block's length.

    The process's agents file becomes the one with each `mcp.<server>` replaced by
    its tools (restored on exit). An agent naming a tool a reachable server does not
    have raises `AgentsFileError` (the servers are closed first).
    """
    servers = McpServers(agents_file.mcp, registry, errlog=errlog)
    try:
        listed = await servers.start()
        servers.register_unreached(
            name for agent in agents_file.agents for name in agent.tools if name.count(".") >= 2
        )
        concrete = with_mcp_tools(agents_file, listed, label)
        previous = use(concrete)
        try:
            yield servers
        finally:
            use(previous)
    finally:
        await servers.close()


@contextlib.asynccontextmanager
async def mcp_tools_or_exit(path: Path | None) -> AsyncIterator[McpServers]:
    """For the entry points, after `load_agents_or_exit`: the loaded file's MCP tools;
    an agent naming a tool its server does not list stops the process with one line."""
    entered = False
    try:
        async with mcp_tools(loaded(), "agents.toml" if path is None else str(path)) as servers:
            entered = True
            yield servers
    except AgentsFileError as exc:
        if entered:
            raise
        sys.exit(f"configuration error: {exc}")
