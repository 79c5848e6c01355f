"""A small MCP server for the tests, written with the official package (`MCPServer`,
formerly FastMCP): `python -m tests.mcp_server` serves stdio, `... http PORT`
streamable HTTP on 127.0.0.1:PORT at /mcp."""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("slipstream-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """The text in capitals, with an exclamation mark."""
    return text.upper() + "!"


@server.tool()
def fail(why: str) -> str:
    """Always fails, saying why (MCPServer sends a ToolError's message as the result)."""
    raise ToolError(f"failed on purpose: {why}")


@server.tool()
async def slow(seconds: float, mark: str = "") -> str:
    """Answers after `seconds` (to test timeouts); first writes the file `mark`, if
    given, so a test knows the call is running."""
    if mark:
        await anyio.Path(mark).write_text("running")
    await anyio.sleep(seconds)
    return "slept"


@server.tool()
def die() -> str:
    """Ends the server process at once, mid-call (to test reconnecting)."""
    os._exit(3)


def main() -> None:
    pid_file = os.environ.get("MCP_TEST_PID_FILE")
    if pid_file:  # so a test can check the server is stopped with its worker
        with open(pid_file, "w") as out:
            out.write(str(os.getpid()))
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()


if __name__ == "__main__":
    main()
