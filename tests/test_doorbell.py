"""Bells say which partition streams have something new, and none is missed."""

from __future__ import annotations

import asyncio
import contextlib

from slipstream.backend import Backend, as_entries
from slipstream.doorbell import Doorbell
from slipstream.keys import Partition
from slipstream.supervise import run_loops

STREAMS = [Partition(n).key("bell-test") for n in range(4)]


async def _listening(bell: Doorbell, stop: asyncio.Event) -> asyncio.Task[None]:
    task = asyncio.create_task(run_loops(bell.loops(), stop, None))
    assert await bell.wait(1.0) == set(bell.streams)  # all start rung: read what was there
    return task


async def test_a_bell_rings_for_the_stream_appended_to(served_backend: Backend) -> None:
    bell = Doorbell(served_backend, STREAMS, name="test")
    stop = asyncio.Event()
    task = await _listening(bell, stop)
    try:
        # The listeners may not have blocked yet: their cursor was taken before they
        # rang, so an append now is after it and rings once they read.
        await served_backend.client.xadd(STREAMS[2], {"n": "1"})
        # Fails by timing out if it never rings. Others may ring too (a listener's
        # first pass rings for what came before it listened): a ring only says "look".
        async with asyncio.timeout(10):
            while STREAMS[2] not in await bell.wait(5.0):
                pass
    finally:
        stop.set()
        await task
        await bell.close()


async def test_a_reader_woken_by_bells_reads_every_entry(served_backend: Backend) -> None:
    """A writer appends to all streams while a reader reads only what rang: it gets all."""
    bell = Doorbell(served_backend, STREAMS, name="test")
    stop = asyncio.Event()
    task = await _listening(bell, stop)
    total = 400
    seen: dict[str, str] = dict.fromkeys(STREAMS, "0-0")
    got = 0

    async def write() -> None:
        for n in range(total):
            await served_backend.client.xadd(STREAMS[n % len(STREAMS)], {"n": str(n)})
            if n % 37 == 0:
                await asyncio.sleep(0.02)  # pauses, so the reader also waits on the bells

    writer = asyncio.create_task(write())
    try:
        async with asyncio.timeout(30):
            while got < total:
                for stream in await bell.wait(5.0):
                    # Fewer than are there, as a busy reader would: it rings to come back.
                    entries = as_entries(
                        await served_backend.client.xrange(stream, f"({seen[stream]}", count=7)
                    )
                    if len(entries) == 7:
                        bell.ring(stream)
                    if entries:
                        seen[stream] = str(entries[-1][0])
                        got += len(entries)
        assert got == total
        await writer
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        stop.set()
        await task
        await bell.close()


async def test_a_bell_whose_connection_is_killed_rings_again_and_listens_on(
    served_backend: Backend,
) -> None:
    bell = Doorbell(served_backend, STREAMS[:1], name="test")
    stop = asyncio.Event()
    task = await _listening(bell, stop)
    try:
        # Kill every blocked client on every master: the bell's read among them.
        where = {"target_nodes": "all"} if served_backend.cluster else {}
        await served_backend.client.execute_command(  # type: ignore[no-untyped-call]
            "CLIENT", "KILL", "TYPE", "normal", **where
        )
        async with asyncio.timeout(10):
            while STREAMS[0] not in await bell.wait(5.0):
                pass
        # After the fault it rang (it cannot know what it missed), and it listens again.
        await served_backend.client.xadd(STREAMS[0], {"n": "after"})
        async with asyncio.timeout(10):
            while STREAMS[0] not in await bell.wait(5.0):
                pass
    finally:
        stop.set()
        await task
        await bell.close()
