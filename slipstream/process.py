"""Running a role until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ConfigError


def connect_or_exit(settings: Settings, role: str) -> Backend:
    if settings.redis_url is None:
        sys.exit(
            f"{role}: REDIS_URL is not set. Point it at the Redis the web process uses, "
            "e.g. REDIS_URL=redis://127.0.0.1:6379/0, or run `python -m service` alone "
            "for the embedded system that runs every role in one process."
        )
    return Backend.connect(settings.redis_url)


def settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")


async def until_signalled(body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await body(stop)
