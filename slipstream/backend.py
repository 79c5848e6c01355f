"""Connections to Redis, real or in-process.

redis-py's defaults do not suit a stream consumer: a blocking read longer
than the socket timeout is retried, a full pool raises, and a timed-out
command is retried ten times, so a paused Redis holds a caller for a minute.
So commands use a `BlockingConnectionPool` with short timeouts (a paused or
unreachable Redis is an error within about a second, which callers turn into
a 503 or a retried pass) and one retry, on a dropped connection only: a
command that timed out may have run, and is not sent twice. Each blocking
reader gets a client of its own with no socket timeout (a read must not time
out while Redis is merely idle; and redis-py 8 can leave a read with a socket
timeout hanging when it is cancelled) and TCP keep-alive, so a peer that
vanished without a reset is still noticed.

In-process fakeredis cannot block on streams the way Redis does, so there
readers poll without blocking and wait on a `Notifier` that every append
pokes: the same code paths, without a sleep loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

Entry = tuple[str, dict[str, str]]

# The default of SLIPSTREAM_REDIS_TIMEOUT_MS: a paused or unreachable Redis must
# turn into an answer (503) within a second.
COMMAND_TIMEOUT_S = 0.75
# How long a command may wait for a free connection: each busy one frees itself
# within the command timeout even when Redis hangs, so this is rarely reached.
POOL_WAIT_S = 1.0


def _keepalive() -> dict[int, int]:
    """Probe an idle reader's peer after 5 s, every 2 s, 3 times: a Redis host that
    vanished without a reset is noticed in about 11 s instead of the kernel's 2 hours."""
    options = {}
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options[getattr(socket, name)] = value
    return options


def redacted(url: str) -> str:
    """The URL without its password, for logs and health answers."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.hostname or ""
    netloc = f"{user}***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _one_reconnect() -> Retry:
    # A connection killed while idle in the pool fails its next command: one
    # fresh connection answers it. Timeouts are not retried (the command may have run).
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


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
        # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation
        # that arrives together with the event.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await changed.wait()


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
    def connect(
        cls, url: str, *, max_connections: int = 64, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> Backend:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=POOL_WAIT_S,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            retry=_one_reconnect(),
        )
        return cls(client=aioredis.Redis.from_pool(pool), url=url)

    @classmethod
    def in_process(cls) -> Backend:
        import fakeredis

        server = fakeredis.FakeServer()
        client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
        return cls(client=client, url=None, fake_server=server, notifier=Notifier())

    def reader(self) -> aioredis.Redis:
        """A client of its own for one blocking reader."""
        if self.fake_server is not None:
            return self.client
        reader = aioredis.Redis.from_url(
            self.url or "",
            decode_responses=True,
            socket_timeout=None,
            socket_keepalive=True,
            socket_keepalive_options=_keepalive(),
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            single_connection_client=True,
            retry=Retry(NoBackoff(), 0),
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
