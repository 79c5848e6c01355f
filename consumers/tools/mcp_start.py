"""The entry points' way in to MCP tools, without the `mcp` package when no server is set.

Importing `mcp` costs about a second of start-up (it brings its own web stack);
a deployment whose agents file declares no `[mcp.<server>]` never pays it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from consumers.agents import loaded


@contextlib.asynccontextmanager
async def mcp_tools_or_exit(path: Path | None) -> AsyncIterator[None]:
    """`consumers.tools.mcp_servers.mcp_tools_or_exit` when the loaded agents file
    declares MCP servers; nothing otherwise."""
    if not loaded().mcp:
        yield
        return
    from consumers.tools import mcp_servers  # the `mcp` package, only when needed

    async with mcp_servers.mcp_tools_or_exit(path):
        yield
