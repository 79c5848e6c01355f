"""Consumer names that tell an operator where a process runs."""

from __future__ import annotations

import os
import secrets
import socket


def consumer_name() -> str:
    """`host:pid:nonce`; the 64-bit nonce keeps a restarted process with a reused pid distinct."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
