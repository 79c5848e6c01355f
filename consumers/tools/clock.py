"""The `now` tool: the current time in an IANA time zone."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from consumers.tools.errors import ToolError
from consumers.tools.registry import tool


def zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError: a malformed key (an absolute path, '..'); never read as a file name.
        raise ToolError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None


@tool
def now(
    zone: Annotated[str, Field(description="IANA time zone, e.g. 'America/New_York'")] = "UTC",
) -> str:
    """The current date and time in a time zone, as ISO 8601 with its UTC offset."""
    return datetime.now(zone_named(zone)).isoformat(timespec="seconds")
