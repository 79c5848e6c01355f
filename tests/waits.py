"""Waiting on conditions rather than sleeping through them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from slipstream.store import EventStore


async def next_millisecond(store: EventStore, thread_id: str) -> None:
    """Wait until the server clock has passed the thread's last event.

    Activity is ordered by millisecond; this makes the next event strictly later.
    """
    last_ms = int((await store.read(thread_id))[-1].id.split("-")[0])
    while True:
        seconds, micros = await store.redis.time()
        if seconds * 1000 + micros // 1000 > last_ms:
            return
        await asyncio.sleep(0.001)


async def until(condition: Callable[[], Awaitable[bool]], within: float = 10) -> None:
    """Poll an async condition until it holds; fail after `within` seconds."""
    async with asyncio.timeout(within):
        # The condition lives in Redis or another process: there is no local event to await.
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
