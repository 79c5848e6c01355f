"""Ports for the tests' own servers.

`service.embedded.free_port` asks the OS for any free port, from the ephemeral
range: between choosing one and a server binding it, the other test process
(pytest -n 2) may be given the same port, or an outgoing connection take it. A
server that then fails to bind leaves its test talking to someone else's (a
browser test once did). Here each xdist worker draws from a range of its own,
below the ephemeral ports, and never hands out a port twice in a row.
"""

from __future__ import annotations

import os
import random
import socket
from collections import deque

BASE = 20_000  # below Linux's ephemeral ports (32768-60999)
SPAN = 3_000  # ports per worker: up to four workers fit below the ephemeral range
_recent: deque[int] = deque(maxlen=500)  # given out lately: maybe not bound yet


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = worker.removeprefix("gw")
    return int(digits) % 4 if digits.isdigit() else 0


def free_port() -> int:
    low = BASE + _worker_index() * SPAN
    for _ in range(1_000):
        port = random.randrange(low, low + SPAN)
        if port in _recent:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
        _recent.append(port)
        return port
    raise RuntimeError(f"no free port in {low}-{low + SPAN - 1}")
