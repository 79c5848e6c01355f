"""Text from exceptions, made fit for a thread's events: no URLs (they may carry keys)."""

from __future__ import annotations

import re

from slipstream.secrets import configured_secrets, masked

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def without_urls(text: str) -> str:
    """`text` with every URL replaced by <url> (a base URL or a query string may carry a key)."""
    return _URL.sub("<url>", text)


SHOWN_REASON_CHARS = 200


def shown_reason(text: str) -> str:
    """A failure reason fit for users: no URLs, no configured secret, one short line."""
    line = (masked(without_urls(text), configured_secrets()).strip().splitlines() or [""])[0]
    return line if len(line) <= SHOWN_REASON_CHARS else line[: SHOWN_REASON_CHARS - 3] + "..."
