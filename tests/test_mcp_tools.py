"""MCP tools: a real MCP server (tests/mcp_server.py, the official package's MCPServer)
run as a child process over stdio, and over streamable HTTP; its tools registered as
`mcp.<server>.<tool>`, called, failing, reconnected; a whole chat run using one; the
agents file's `[mcp.<name>]` tables checked at start."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TextIO

import httpx
import pytest

from consumers import agents
from consumers.agents import AgentsFileError, McpServer, load, with_mcp_tools
from consumers.llm.scripted import ScriptedLLM
from consumers.llm.tool_names import registry_names, wire_name
from consumers.tools import DuplicateTool, ToolCall, ToolRegistry, mcp_servers, schema_tool
from consumers.tools.mcp_servers import McpServers, mcp_tools
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import running_system
from tests.ports import free_port
from tests.processes import (
    ROOT,
    chat,
    env_for,
    exits_within,
    gone_within,
    kill_pidfile,
    pid_alive,
    processes,
    spawn,
    wait_for_status,
    wait_healthy,
)
from tests.waits import until

STDIO = McpServer(
    command=sys.executable, args=("-m", "tests.mcp_server"), env={"PYTHONPATH": str(ROOT)}
)
CONTEXT = ToolCall(run_id="run-1", thread_id="thread-1", call_id="call-1")

AGENTS = """\
[router]
default = "assistant"

[[agents]]
name = "assistant"
description = "General help."
system = "You help."

[[agents]]
name = "counter"
description = "Counts with an MCP server."
system = "You count."
tools = ["mcp.test"]

[mcp.test]
command = "{python}"
args = ["-m", "tests.mcp_server"]
env = {{ PYTHONPATH = "{root}" }}
timeout = 20
"""


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[TextIO]:
    """The servers' stderr (their logs and tracebacks), kept out of the test output."""
    with (tmp_path / "mcp-server.log").open("w") as out:
        yield out


@pytest.fixture
async def stdio_tools(errlog: TextIO) -> AsyncIterator[tuple[ToolRegistry, McpServers]]:
    registry = ToolRegistry()
    servers = McpServers({"test": STDIO}, registry, errlog=errlog)
    try:
        listed = await servers.start()
        assert listed == {"test": ["add", "shout", "fail", "slow", "die"]}
        yield registry, servers
    finally:
        await servers.close()


async def test_a_servers_tools_are_registered_with_its_schemas(
    stdio_tools: tuple[ToolRegistry, McpServers],
) -> None:
    registry, _ = stdio_tools
    assert registry.names() == [
        "mcp.test.add",
        "mcp.test.die",
        "mcp.test.fail",
        "mcp.test.shout",
        "mcp.test.slow",
    ]
    add = registry.get("mcp.test.add")
    assert add is not None and add.description == "Add two integers."
    schema = add.input_schema
    assert schema["required"] == ["a", "b"] and schema["type"] == "object"
    assert {k: v["type"] for k, v in schema["properties"].items()} == {
        "a": "integer",
        "b": "integer",
    }
    # The registry name is what the agents file and the journal use; the model sees
    # the wire name, mapped back by the provider.
    assert add.definition()["name"] == "mcp.test.add"
    assert wire_name("mcp.test.add") == "mcp__test__add"
    assert registry_names(registry.names())["mcp__test__shout"] == "mcp.test.shout"


async def test_calls_results_and_errors(stdio_tools: tuple[ToolRegistry, McpServers]) -> None:
    registry, _ = stdio_tools
    added = await registry.call("mcp.test.add", {"a": 2, "b": 3}, CONTEXT)
    assert (added.result, added.is_error) == ("5", False)
    shouted = await registry.call("mcp.test.shout", {"text": "hi"}, CONTEXT)
    assert (shouted.result, shouted.is_error) == ("HI!", False)
    failed = await registry.call("mcp.test.fail", {"why": "testing"}, CONTEXT)
    assert (
        failed.is_error and failed.result == "Error executing tool fail: failed on purpose: testing"
    )
    # Checked against the server's schema before anything is sent.
    invalid = await registry.call("mcp.test.add", {"a": "two"}, CONTEXT)
    assert invalid.is_error
    assert invalid.result == (
        "invalid arguments for tool 'mcp.test.add': arguments: 'b' is a required property; "
        "a: 'two' is not of type 'integer'."
    )


async def test_a_server_that_dies_is_reconnected_by_the_next_call(
    stdio_tools: tuple[ToolRegistry, McpServers],
) -> None:
    registry, servers = stdio_tools
    died = await registry.call("mcp.test.die", {}, CONTEXT)
    assert died.is_error and "closed the connection" in str(died.result)
    assert not servers.connections["test"].connected
    again = await registry.call("mcp.test.add", {"a": 1, "b": 1}, CONTEXT)
    assert (again.result, again.is_error) == ("2", False)
    assert servers.connections["test"].connected


async def test_a_call_past_the_servers_timeout_is_an_error_and_the_session_goes_on(
    errlog: TextIO,
) -> None:
    registry = ToolRegistry()
    servers = McpServers(
        {"test": STDIO.model_copy(update={"timeout": 1.0})}, registry, errlog=errlog
    )
    try:
        await servers.start()
        late = await registry.call("mcp.test.slow", {"seconds": 30}, CONTEXT)
        assert (late.result, late.is_error) == ("tool 'mcp.test.slow' timed out after 1 s", True)
        added = await registry.call("mcp.test.add", {"a": 2, "b": 2}, CONTEXT)
        assert (added.result, added.is_error) == ("4", False)
    finally:
        await servers.close()


async def test_a_cancelled_call_leaves_the_session_usable(
    stdio_tools: tuple[ToolRegistry, McpServers], tmp_path: Path
) -> None:
    registry, servers = stdio_tools
    mark = tmp_path / "running"
    call = asyncio.create_task(
        registry.call("mcp.test.slow", {"seconds": 60, "mark": str(mark)}, CONTEXT)
    )

    async def running() -> bool:
        return mark.exists() or call.done()

    await until(running, within=20)
    assert not call.done()
    call.cancel()  # as the agent loop does when the run is cancelled
    with pytest.raises(asyncio.CancelledError):
        await call
    assert servers.connections["test"].connected
    added = await registry.call("mcp.test.add", {"a": 20, "b": 22}, CONTEXT)
    assert (added.result, added.is_error) == ("42", False)


async def test_an_unreachable_server_is_logged_and_its_named_tools_answer_errors(
    errlog: TextIO, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ToolRegistry()
    gone = McpServer(command=str(ROOT / "no-such-server"), timeout=5)
    servers = McpServers({"gone": gone}, registry, errlog=errlog)
    try:
        assert await servers.start() == {}
        assert "MCP server 'gone'" in caplog.text and "unreachable" in caplog.text
        servers.register_unreached(["mcp.gone.lookup", "mcp.gone"])
        assert registry.names() == ["mcp.gone.lookup"]
        result = await registry.call("mcp.gone.lookup", {"q": 1}, CONTEXT)
        assert result.is_error and "MCP server 'gone'" in str(result.result)
        assert "unreachable" in str(result.result)
    finally:
        await servers.close()
    assert registry.names() == []


class Silent:
    """A TCP server that accepts connections and never answers: an MCP server hung on connect."""

    def __init__(self) -> None:
        self.accepted = 0
        self.held: list[asyncio.StreamWriter] = []

    async def hold(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.held.append(writer)


@pytest.fixture
async def silent() -> AsyncIterator[tuple[Silent, str]]:
    """The silent server and its MCP URL."""
    hole = Silent()
    server = await asyncio.start_server(hole.hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield hole, f"http://127.0.0.1:{port}/mcp"
    finally:
        for writer in hole.held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_server_that_hangs_on_connect_is_tried_once_not_by_every_call(
    silent: tuple[Silent, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A call's deadline (the server's `timeout`) ends the call's wait, not the attempt to
    connect: the next call waits on the same attempt, and once it fails (its own deadline)
    calls get a prompt error for RETRY_AFTER_S, with no new connection."""
    monkeypatch.setattr(mcp_servers, "MIN_CONNECT_S", 1.0)  # the attempt's own deadline
    hole, url = silent
    registry = ToolRegistry()
    servers = McpServers({"hole": McpServer(url=url, timeout=0.5)}, registry)
    servers.register_unreached(["mcp.hole.echo"])
    try:
        first = await registry.call("mcp.hole.echo", {}, CONTEXT)
        assert (first.result, first.is_error) == (
            "tool 'mcp.hole.echo' timed out after 0.5 s",
            True,
        )
        second = await registry.call("mcp.hole.echo", {}, CONTEXT)  # at once after
        assert second.is_error

        async def attempt_failed() -> bool:
            return "MCP server 'hole'" in caplog.text and "unreachable" in caplog.text

        await until(attempt_failed, within=5)
        third = await registry.call("mcp.hole.echo", {}, CONTEXT)
        assert third.is_error
        assert str(third.result).startswith(
            "MCP server 'hole' is unreachable: TimeoutError (last tried "
        ), third.result
        assert hole.accepted == 1, f"{hole.accepted} connections: calls connected again"
    finally:
        await servers.close()


async def test_closing_while_a_call_waits_to_connect_ends_the_call_with_an_error(
    silent: tuple[Silent, str],
) -> None:
    """The worker stopping cancels the attempt; the call waiting on it (its run not
    cancelled) gets an error result, not a cancellation that is not its own."""
    hole, url = silent
    registry = ToolRegistry()
    servers = McpServers({"hole": McpServer(url=url, timeout=30)}, registry)
    servers.register_unreached(["mcp.hole.echo"])
    call = asyncio.create_task(registry.call("mcp.hole.echo", {}, CONTEXT))
    try:

        async def connecting() -> bool:
            return hole.accepted == 1

        await until(connecting)
    finally:
        await servers.close()
    result = await call
    assert (result.result, result.is_error) == ("MCP server 'hole': closed while connecting", True)


async def test_an_unreachable_servers_command_line_is_logged_without_args_not_shown_to_the_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The error result is journaled in `tool.result` and shown in the thread; the args
    may hold a key (`without_urls` only takes URLs out): it names the server and the
    exception's class, and the log names the command, not its args."""
    registry = ToolRegistry()
    vault = McpServer(command="/no/such/server", args=("--api-key", "sk-s3cret"))
    servers = McpServers({"vault": vault}, registry)
    servers.register_unreached(["mcp.vault.read"])
    try:
        result = await registry.call("mcp.vault.read", {}, CONTEXT)
        again = await registry.call("mcp.vault.read", {}, CONTEXT)  # the throttle's error
    finally:
        await servers.close()
    assert (result.result, result.is_error) == (
        "MCP server 'vault' is unreachable: FileNotFoundError",
        True,
    )
    assert again.is_error and "sk-s3cret" not in str(again.result)
    assert "/no/such/server" not in str(again.result)
    assert "/no/such/server" in caplog.text
    assert "sk-s3cret" not in caplog.text


def test_mcp_server_entries_become_the_tools_the_server_listed(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        AGENTS.format(python=sys.executable, root=ROOT).replace(
            'tools = ["mcp.test"]', 'tools = ["mcp.test", "calculator"]\napprove = ["mcp.test"]'
        )
    )
    parsed = load(path)
    assert parsed.mcp["test"].timeout == 20 and parsed.mcp["test"].env == {"PYTHONPATH": str(ROOT)}
    concrete = with_mcp_tools(parsed, {"test": ["add", "shout"]}, str(path))
    counter = concrete.by_name["counter"]
    assert counter.tools == ("mcp.test.add", "mcp.test.shout", "calculator")
    assert counter.approve == ("mcp.test.add", "mcp.test.shout")
    # A server that was not reached is left as written.
    assert with_mcp_tools(parsed, {}, str(path)).by_name["counter"].tools == (
        "mcp.test",
        "calculator",
    )


def test_an_agent_naming_a_tool_the_server_does_not_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        AGENTS.format(python=sys.executable, root=ROOT).replace('"mcp.test"', '"mcp.test.sub"')
    )
    with pytest.raises(AgentsFileError) as caught:
        with_mcp_tools(load(path), {"test": ["add", "shout"]}, str(path))
    assert str(caught.value) == (
        f"{path}: agent 'counter': tools: MCP server 'test' has no tool 'sub' "
        "(it lists: add, shout)"
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('command = "x"\nenv = { A = 1 }', "mcp server 'x': env.A: Input should be a valid string"),
        ('url = "http://h/mcp"\nenv = { A = "1" }', "mcp server 'x': env goes with command"),
        ('command = "x"\ntimeout = 0', "mcp server 'x': timeout: Input should be greater than 0"),
        ('command = "x"\ntimeot = 3', "mcp server 'x': timeot: Extra inputs are not permitted"),
        ('url = "ftp://h"', "mcp server 'x': url: String should match pattern"),
    ],
)
def test_a_bad_mcp_table_is_refused_with_one_line(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        f'[[agents]]\nname = "assistant"\ndescription = "d"\nsystem = "s"\n\n[mcp.x]\n{table}\n'
    )
    with pytest.raises(AgentsFileError) as caught:
        load(path)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{path}: {message}"), caught.value


@pytest.mark.parametrize("name", ["mcp.test.add", "mcp__test__add"])
async def test_a_chat_run_calls_an_mcp_tool_and_journals_it(
    backend: Backend, settings: Settings, tmp_path: Path, errlog: TextIO, name: str
) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(AGENTS.format(python=sys.executable, root=ROOT))
    previous = agents.use(load(path))
    try:
        async with (
            mcp_tools(agents.loaded(), str(path), errlog=errlog),
            running_system(backend, settings, llm=ScriptedLLM(words=6, delay_ms=1)) as system,
        ):
            listed = await system.http.get("/api/agents")
            [counter] = [a for a in listed.json() if a["name"] == "counter"]
            assert counter["tools"] == [
                "mcp.test.add",
                "mcp.test.shout",
                "mcp.test.fail",
                "mcp.test.slow",
                "mcp.test.die",
            ]
            thread_id = await system.new_thread()
            sent = await system.send(thread_id, f'@counter [[tool {name} {{"a":2,"b":3}}]]')
            view = await system.wait_for_run(thread_id, sent["run_id"])
            events = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
    finally:
        agents.use(previous)
    assert view["runs"][sent["run_id"]]["status"] == "completed"
    [reply] = [m for m in view["messages"] if m["role"] == "assistant"]
    assert reply["agent"] == "counter"
    assert reply["content"].startswith('mcp.test.add returned "5". ')
    journaled = [e["event"] for e in events if e["event"]["type"].startswith("tool.")]
    assert [(e["type"], e.get("tool"), e.get("args"), e.get("result")) for e in journaled] == [
        ("tool.called", "mcp.test.add", {"a": 2, "b": 3}, None),
        ("tool.result", None, None, "5"),
    ]
    assert journaled[1]["is_error"] is False


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _listening_or_gone(port: int, server: asyncio.subprocess.Process) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0 or server.returncode is not None


async def _http_server(port: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        server = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.mcp_server", "http", str(port)),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    await until(lambda: _listening_or_gone(port, server), within=20)
    assert server.returncode is None, f"the MCP server exited with {server.returncode}: see {log}"
    return server


async def _stop(server: asyncio.subprocess.Process) -> None:
    if server.returncode is None:
        server.terminate()
        await server.wait()


async def test_streamable_http_serves_the_same_tools_and_is_reconnected(
    tmp_path: Path, errlog: TextIO
) -> None:
    port = _free_loopback_port()
    log = tmp_path / "http-server.log"
    server = await _http_server(port, log)
    registry = ToolRegistry()
    config = McpServer(url=f"http://127.0.0.1:{port}/mcp", timeout=10)
    servers = McpServers({"web": config}, registry, errlog=errlog)
    try:
        assert await servers.start() == {"web": ["add", "shout", "fail", "slow", "die"]}
        result = await registry.call("mcp.web.shout", {"text": "over http"}, CONTEXT)
        assert (result.result, result.is_error) == ("OVER HTTP!", False)
        failed = await registry.call("mcp.web.fail", {"why": "http"}, CONTEXT)
        assert failed.is_error and str(failed.result).endswith("failed on purpose: http")

        await _stop(server)  # the server goes away between calls
        lost = await registry.call("mcp.web.add", {"a": 1, "b": 2}, CONTEXT)
        assert lost.is_error and "MCP server 'web'" in str(lost.result), lost
        server = await _http_server(port, log)  # and comes back
        again = await registry.call("mcp.web.add", {"a": 1, "b": 2}, CONTEXT)
        assert (again.result, again.is_error) == ("3", False)
    finally:
        await servers.close()
        await _stop(server)


@pytest.mark.parametrize("role", ["consumers", "service"])
def test_the_worker_stops_at_start_when_an_agent_names_a_tool_the_server_lacks(
    tmp_path: Path, role: str
) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        AGENTS.format(python=sys.executable, root=ROOT).replace('"mcp.test"', '"mcp.test.sub"')
    )
    # A worker checks REDIS_URL first; nothing listens there, and nothing is asked
    # of it before the check. The service runs embedded (its worker inside).
    env = env_for(
        PORT=str(free_port()),
        SLIPSTREAM_AGENTS=str(path),
        REDIS_URL="redis://127.0.0.1:1/0",
        SLIPSTREAM_DATA_DIR=str(tmp_path / "data"),
    )
    if role == "service":
        env.pop("REDIS_URL")
    log = tmp_path / f"{role}.log"
    try:
        with processes() as running:
            process = spawn(role, env, log)
            running.append(process)
            assert exits_within(process, 30) == 1
    finally:
        kill_pidfile(tmp_path / "data" / "redis" / "redis.pid")
    lines = log.read_text().splitlines()
    assert lines[-1] == (
        f"configuration error: {path}: agent 'counter': tools: MCP server 'test' has no "
        "tool 'sub' (it lists: add, shout, fail, slow, die)"
    ), lines


def test_wire_names_are_what_the_messages_api_takes() -> None:
    assert wire_name("calculator") == "calculator"  # the built-ins are sent unchanged
    assert wire_name("mcp.files.read file") == "mcp__files__read_file"
    long = "mcp.server." + "x" * 80
    assert len(wire_name(long)) == 64 and wire_name(long) != wire_name(long + "y")
    registry = ToolRegistry()
    registry.add(schema_tool("mcp.a.b", "d", {"type": "object"}, _nothing))
    with pytest.raises(DuplicateTool, match="would both be sent to the model as 'mcp__a__b'"):
        registry.add(schema_tool("mcp__a.b", "d", {"type": "object"}, _nothing))


async def _nothing(arguments: dict[str, object]) -> None:
    return None


def test_the_embedded_service_runs_an_agent_with_mcp_tools_and_stops_the_server(
    tmp_path: Path,
) -> None:
    """The real thing: `python -m service` with SLIPSTREAM_AGENTS naming [mcp.test]."""
    pid_file = tmp_path / "mcp.pid"
    path = tmp_path / "agents.toml"
    path.write_text(
        AGENTS.format(python=sys.executable, root=ROOT).replace(
            "env = {", f'env = {{ MCP_TEST_PID_FILE = "{pid_file}", '
        )
    )
    port = free_port()
    env = env_for(
        PORT=str(port), SLIPSTREAM_AGENTS=str(path), SLIPSTREAM_DATA_DIR=str(tmp_path / "data")
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with processes() as running:
            service = spawn("service", env, tmp_path / "service.log")
            running.append(service)
            wait_healthy(port, service)
            thread_id, run_id = chat(base, '@counter [[tool mcp.test.shout {"text": "hey"}]]')
            view = wait_for_status(base, thread_id, run_id, {"completed", "failed"})
            events = httpx.get(f"{base}/api/threads/{thread_id}/events").json()
            listed = httpx.get(f"{base}/api/agents").json()
            server_pid = int(pid_file.read_text())
            assert pid_alive(server_pid)
            service.send_signal(signal.SIGTERM)
            assert exits_within(service, 20) == 0
        gone_within(server_pid)  # the MCP server was stopped with the worker
    finally:
        kill_pidfile(tmp_path / "data" / "redis" / "redis.pid")
    assert view["runs"][run_id]["status"] == "completed", view["runs"][run_id]
    [reply] = [m for m in view["messages"] if m["role"] == "assistant"]
    assert reply["content"].startswith('mcp.test.shout returned "HEY!". ')
    called = [e["event"] for e in events if e["event"]["type"] == "tool.called"]
    assert [(e["tool"], e["args"]) for e in called] == [("mcp.test.shout", {"text": "hey"})]
    [counter] = [a for a in listed if a["name"] == "counter"]
    assert "mcp.test.add" in counter["tools"]
