"""Tool names as a model API accepts them, and back.

Slipstream names tools freely (`mcp.files.read`: the server and the tool), but the
Anthropic Messages API wants `^[a-zA-Z0-9_-]{1,64}$`. A provider sends
`wire_name(name)` and maps the names the model answers with back through
`registry_names(prompt.tools)`; everything above the provider (the agent loop, the
journal, the agents file) sees the registry's name only. A name the API accepts
already is sent as it is, so the built-in tools are unchanged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

WIRE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NOT_WIRE = re.compile(r"[^A-Za-z0-9_-]")
_MAX = 64
_HASHED = 8  # hex digits of the full name kept when a name must be cut


def wire_name(name: str) -> str:
    """`mcp.files.read` -> `mcp__files__read`; other characters become `_`, and a name
    past 64 characters keeps its start and a hash of the whole."""
    if WIRE_NAME.match(name):
        return name
    wire = _NOT_WIRE.sub("_", name.replace(".", "__")) or "_"
    if len(wire) > _MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:_HASHED]
        wire = f"{wire[: _MAX - _HASHED - 1]}_{digest}"
    return wire


def registry_names(names: Iterable[str]) -> dict[str, str]:
    """Wire name -> registry name for the tools of one request."""
    return {wire_name(name): name for name in names}
