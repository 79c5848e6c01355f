"""Masking secrets in text bound for logs: URL passwords, configured keys and tokens.

Applied to every log line by `slipstream.logs`, so a line written tomorrow by code
that forgot to redact (an exception's text quoting a Redis URL, a provider's error
echoing a header) still leaks nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# `scheme://user:password@` or `scheme://token@`: everything between `//` and the
# last `@` before the host is userinfo. No `/`, whitespace or quote inside it.
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/\s@'\"<>]+@", re.IGNORECASE)
# Anthropic key shapes and Slipstream's own API tokens (slipstream/users.py), whether
# configured here or not (a user pasting one into a message).
_KEY_SHAPES = re.compile(r"\bsk-ant-[A-Za-z0-9_-]{4,}|\bss_[A-Za-z0-9_-]{40,}")
# Environment variables whose values are secrets by their names.
_SECRET_NAMES = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASS|PWD|CREDENTIALS?)$")
_SHORTEST_SECRET = 8  # shorter values would mask ordinary words ("true", "on")
MASK = "***"


def configured_secrets(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The values of the environment's secret-named variables (ANTHROPIC_API_KEY, ...)."""
    values = os.environ if env is None else env
    found = {
        value
        for name, value in values.items()
        if _SECRET_NAMES.search(name.upper()) and len(value) >= _SHORTEST_SECRET
    }
    return tuple(sorted(found, key=len, reverse=True))  # longest first: no partial masks


def without_userinfo(text: str) -> str:
    """`text` with every URL's userinfo masked: redis://:pw@host -> redis://***@host."""
    return _USERINFO.sub(rf"\1{MASK}@", text)


def masked(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with URL userinfo, key-shaped strings and each of `secrets` masked."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _KEY_SHAPES.sub(MASK, without_userinfo(text))
