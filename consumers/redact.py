"""Text from exceptions, made fit for a thread's events: no URLs (they may carry keys)."""

from __future__ import annotations

import re

_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def without_urls(text: str) -> str:
    """`text` with every URL replaced by <url> (a base URL or a query string may carry a key)."""
    return _URL.sub("<url>", text)
