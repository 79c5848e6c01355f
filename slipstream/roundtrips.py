"""Counts this process's client round trips to Redis, for the benchmark.

A round trip is one write of commands to a connection: one command, or one
whole pipeline or transaction. With SLIPSTREAM_ROUNDTRIPS_FILE set, a worker
counts them and, as it exits, writes ``{"round_trips": n, "runs": m}`` there
(`python -m bench.versus` divides one by the other). Unset, nothing is wrapped.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio.connection import AbstractConnection

ENV = "SLIPSTREAM_ROUNDTRIPS_FILE"


class RoundTrips:
    def __init__(self) -> None:
        self.count = 0

    def install(self) -> Callable[[], None]:
        """Count every write of every async connection of this process from now on;
        returns what stops counting."""
        send: Callable[..., Awaitable[None]] = AbstractConnection.send_packed_command

        @functools.wraps(send)
        async def counted(self_: AbstractConnection, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            await send(self_, *args, **kwargs)

        # setattr: the wrapper takes what the method takes, which mypy cannot see.
        setattr(AbstractConnection, "send_packed_command", counted)  # noqa: B010

        def uninstall() -> None:
            setattr(AbstractConnection, "send_packed_command", send)  # noqa: B010

        return uninstall

    def write(self, path: str, runs: int) -> None:
        Path(path).write_bytes(orjson.dumps({"round_trips": self.count, "runs": runs}))


def counting() -> tuple[RoundTrips, str] | None:
    """A counter installed now, and where to write it, when the benchmark asks for one."""
    path = os.environ.get(ENV)
    if not path:
        return None
    counter = RoundTrips()
    counter.install()
    return counter, path


# The worker's stats that count a run attempt's end.
RUN_ENDS: Iterable[str] = ("completed", "cancelled", "failed", "retrying", "waiting")
