"""The live sockets under random and malformed client frames: no crash, no lost event.

Clients are only meant to send pings; whatever else arrives (garbage text, binary,
broken JSON, huge numbers, control characters) must leave the socket serving its
thread, and the server answering everyone else. A fixed seed keeps it repeatable.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import orjson
import pytest
from websockets.asyncio.client import connect

from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, frames_until, running_system

FRAMES = 300


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, settings) as running:
        yield running


def garbage(rng: random.Random) -> str | bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048)))
    if kind == 1:
        return "".join(chr(rng.randrange(0x20, 0xD7FF)) for _ in range(rng.randrange(1, 512)))
    if kind == 2:
        return '{"type": "ping"' + "}" * rng.randrange(0, 3)
    if kind == 3:
        return orjson.dumps({"type": rng.choice(["ping", "event", "snapshot", "", None])}).decode()
    if kind == 4:
        return "[" * rng.randrange(1, 5000)
    if kind == 5:
        return str(rng.randrange(10**300))
    return "\x00\x01\x02" * rng.randrange(1, 100)


async def test_random_frames_leave_the_socket_serving(system: System) -> None:
    rng = random.Random(20261206)
    t = await system.new_thread()
    async with connect(system.ws_url(t)) as socket:
        assert orjson.loads(await socket.recv())["type"] == "snapshot"
        for _ in range(FRAMES):
            await socket.send(garbage(rng))
        sent = await system.send(t, "still there?", agent="assistant")
        frames = await frames_until(socket, "run.completed", sent["run_id"])
        kinds = {f["event"]["type"] for f in frames if f["type"] == "event"}
        assert {"message.sent", "run.started", "message.completed", "run.completed"} <= kinds
    async with connect(f"ws://127.0.0.1:{system.port}/api/live/threads") as listing:
        assert orjson.loads(await listing.recv())["type"] == "threads"
        for _ in range(FRAMES):
            await listing.send(garbage(rng))
        await system.send(t, "and the list?", agent="assistant")
        while (frame := orjson.loads(await listing.recv()))["type"] != "thread":
            assert frame["type"] in ("ping", "pong")
        assert frame["summary"]["id"] == t
    assert (await system.http.get("/healthz")).status_code == 200
