"""Connections to Redis, real or in-process.

redis-py's defaults do not suit a stream consumer: a blocking read longer
than the socket timeout is retried, and a full pool raises. So commands use a
`BlockingConnectionPool`, and each blocking reader gets a client of its own
with no socket timeout.

In-process fakeredis cannot block on streams the way Redis does, so there
readers poll without blocking and wait on a `Notifier` that every append
pokes: the same code paths, without a sleep loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis

Entry = tuple[str, dict[str, str]]
StreamReply = list[tuple[str, list[Entry]]]


def as_stream_reply(reply: Any) -> StreamReply:
    """XREAD/XREADGROUP replies as decoded strings (RESP2, decode_responses=True)."""
    return cast(StreamReply, list(reply or []))


def as_entries(reply: Any) -> list[Entry]:
    """XRANGE replies; entries whose fields were deleted are dropped."""
    return [(entry_id, fields) for entry_id, fields in cast(list[Entry], reply or []) if fields]


class Notifier:
    """Wakes in-process readers when something was appended."""

    def __init__(self) -> None:
        self._generation = 0
        self._changed = asyncio.Event()

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        self._generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_after(self, generation: int, seconds: float) -> None:
        """Return once something was appended after `generation`, or on timeout."""
        if self._generation != generation:
            return
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), seconds)


@dataclass
class Backend:
    """A command client plus a way to make blocking readers."""

    client: aioredis.Redis
    url: str | None
    fake_server: Any = None
    notifier: Notifier | None = None
    _readers: list[aioredis.Redis] = field(default_factory=list)

    @property
    def can_block(self) -> bool:
        return self.fake_server is None

    @classmethod
    def connect(cls, url: str, *, max_connections: int = 64) -> Backend:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=10,
            decode_responses=True,
            socket_timeout=10,
            health_check_interval=30,
        )
        return cls(client=aioredis.Redis.from_pool(pool), url=url)

    @classmethod
    def in_process(cls) -> Backend:
        import fakeredis

        server = fakeredis.FakeServer()
        client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        return cls(client=client, url=None, fake_server=server, notifier=Notifier())

    def reader(self) -> aioredis.Redis:
        """A client of its own for one blocking reader (no socket timeout)."""
        if self.fake_server is not None:
            return self.client
        reader = aioredis.Redis.from_url(
            self.url or "",
            decode_responses=True,
            socket_timeout=None,
            single_connection_client=True,
        )
        self._readers.append(reader)
        return reader

    async def release(self, reader: aioredis.Redis) -> None:
        """Close a reader made by `reader()`."""
        if reader is self.client:
            return
        if reader in self._readers:
            self._readers.remove(reader)
        await reader.aclose()

    def appended(self) -> None:
        if self.notifier is not None:
            self.notifier.notify()

    async def xread(
        self, reader: aioredis.Redis, streams: dict[str, str], *, count: int, block_ms: int
    ) -> StreamReply:
        ids = cast(Any, streams)
        if self.notifier is None:
            return as_stream_reply(await reader.xread(ids, count=count, block=block_ms or None))
        generation = self.notifier.generation
        reply = as_stream_reply(await reader.xread(ids, count=count))
        if not _has_entries(reply) and block_ms:
            await self.notifier.wait_after(generation, block_ms / 1000)
            reply = as_stream_reply(await reader.xread(ids, count=count))
        return reply

    async def xreadgroup(
        self,
        reader: aioredis.Redis,
        group: str,
        consumer: str,
        streams: dict[str, str],
        *,
        count: int,
        block_ms: int,
    ) -> StreamReply:
        ids = cast(Any, streams)
        if self.notifier is None:
            return as_stream_reply(
                await reader.xreadgroup(group, consumer, ids, count=count, block=block_ms or None)
            )
        generation = self.notifier.generation
        reply = as_stream_reply(await reader.xreadgroup(group, consumer, ids, count=count))
        if not _has_entries(reply) and block_ms:
            await self.notifier.wait_after(generation, block_ms / 1000)
            reply = as_stream_reply(await reader.xreadgroup(group, consumer, ids, count=count))
        return reply

    async def close(self) -> None:
        for reader in self._readers:
            await reader.aclose()
        self._readers.clear()
        await self.client.aclose()


def _has_entries(reply: StreamReply) -> bool:
    return any(entries for _, entries in reply)
