"""Which partitions' streams have something new, for readers that cannot block on all at once.

On one Redis a worker or projector blocks on every partition in one XREAD or
XREADGROUP. Redis Cluster refuses a command whose keys lie in different slots
(CROSSSLOT), and each partition is a slot of its own. So on a cluster a
`Doorbell` keeps one blocking `XREAD COUNT 1` per stream, each on a
connection to that stream's node, and rings for the stream when something is
appended. The reader then reads, without blocking, only the partitions that
rang. A ring only says "look": it consumes nothing, so a reader that reads
fewer entries than are there simply reads again.

No entry is missed. A bell's cursor is the stream's last id, taken *before*
it rings, and its next blocking read starts there; the reader's read follows
the ring. So every entry either existed when the reader read (and the reader
saw it, or left it for its next read) or comes after the cursor and rings
again. After a fault a bell cannot know what it missed: it rings once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from redis.asyncio import Redis

from slipstream.backend import Backend
from slipstream.supervise import Loop

log = logging.getLogger("slipstream.doorbell")

# Long enough that an idle bell costs next to nothing; a blocked read is
# harmless to cancel at shutdown (it consumes nothing).
BLOCK_MS = 2_000
# A blocking read still unanswered this long after its block is on a dead or
# paused node (the reader has no socket timeout): give it up, read on a fresh one.
READ_GRACE_S = 2.0


class Doorbell:
    def __init__(self, backend: Backend, streams: Iterable[str], *, name: str) -> None:
        self.backend = backend
        self.streams = list(streams)
        self.name = name
        # All start rung: what was there before the bells listened is read first.
        self._rung: set[str] = set(self.streams)
        self._changed = asyncio.Event()
        self._changed.set()
        self._cursors: dict[str, str | None] = dict.fromkeys(self.streams)
        # A reader per stream, so a fault on one node's connection disturbs no other.
        self._readers: dict[str, Redis] = {}

    def loops(self) -> list[Loop]:
        """One supervised listener per stream: a fault in one stops none of the others."""
        return [
            Loop(
                f"{self.name}.bell {stream}",
                self._listener(stream),
                stale_after_s=3 * BLOCK_MS / 1000 + 5,
                log=log,
            )
            for stream in self.streams
        ]

    def ring(self, stream: str) -> None:
        """Mark `stream` to be read (a reader that stopped short of its end says so too)."""
        self._rung.add(stream)
        self._changed.set()

    def ring_all(self) -> None:
        for stream in self.streams:
            self.ring(stream)

    def take(self) -> set[str]:
        """The streams that rang since the last take, cleared: read them after this call."""
        rung, self._rung = self._rung, set()
        self._changed.clear()
        return rung

    async def wait(self, timeout_s: float) -> set[str]:
        """Wait up to `timeout_s` for a ring; take what rang."""
        if not self._rung:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait()
        return self.take()

    def _listener(self, stream: str) -> Callable[[], Awaitable[None]]:
        async def listen() -> None:
            try:
                await self._listen_once(stream)
            except BaseException:
                self._cursors[stream] = None  # it may have missed something: ring on return
                reader = self._readers.pop(stream, None)
                if reader is not None:  # mid-reply, or its node gone: the next pass takes another
                    with contextlib.suppress(Exception):
                        await self.backend.release(reader, failed=True)
                raise

        return listen

    async def _listen_once(self, stream: str) -> None:
        cursor = self._cursors[stream]
        if cursor is None:
            cursor = self._cursors[stream] = await self._last_id(stream)
            self.ring(stream)  # anything up to here may have come while no one listened
        reader = self._readers.get(stream)
        if reader is None:
            reader = self._readers[stream] = await self.backend.reader_for(stream)
        async with asyncio.timeout(BLOCK_MS / 1000 + READ_GRACE_S):
            reply = await self.backend.xread(reader, {stream: cursor}, count=1, block_ms=BLOCK_MS)
        if any(entries for _, entries in reply):
            self._cursors[stream] = await self._last_id(stream)
            self.ring(stream)

    async def _last_id(self, stream: str) -> str:
        newest = await self.backend.client.xrevrange(stream, count=1)
        return str(newest[0][0]) if newest else "0-0"

    async def close(self) -> None:
        readers, self._readers = self._readers, {}
        for reader in readers.values():
            with contextlib.suppress(Exception):
                await self.backend.release(reader)
