"""A tool for process tests that leaves a trace of every time it runs.

Loaded by workers with SLIPSTREAM_TOOLS=tests.counting_tools; each call appends
one line (its idempotency key) to the file named in COUNTING_TOOL_FILE, so a
test can tell how many times the tool really ran, across processes.
"""

from __future__ import annotations

import os
from pathlib import Path

from consumers.tools import current_tool, tool


@tool
def tally(label: str) -> str:
    """Record that this call ran and say so."""
    with Path(os.environ["COUNTING_TOOL_FILE"]).open("a") as out:
        out.write(f"{current_tool().idempotency_key}\n")
    return f"tallied {label}"
