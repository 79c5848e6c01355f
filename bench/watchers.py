"""The websocket side of bench.live_latency, in a process of its own.

    python -m bench.watchers PORT DELTAS < thread ids, one per line

Prints "ready" once every socket has its snapshot, then, when each socket has
seen DELTAS deltas, one JSON object: {thread: {seq: arrival}} with arrival
times from time.perf_counter(), which is CLOCK_MONOTONIC and so comparable
with the writer's in another process on the same machine.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
from websockets.asyncio.client import connect


async def watch(
    port: int,
    thread_id: str,
    deltas: int,
    ready: asyncio.Event,
    arrivals: dict[str, dict[int, float]],
) -> None:
    seen = arrivals.setdefault(thread_id, {})
    async with connect(f"ws://127.0.0.1:{port}/api/threads/{thread_id}/live") as socket:
        await socket.recv()  # the snapshot
        ready.set()
        async for raw in socket:
            arrived = time.perf_counter()
            event = orjson.loads(raw).get("event", {})
            if event.get("type") == "message.delta":
                seen[event["seq"]] = arrived
                if len(seen) == deltas:
                    return


async def main() -> None:
    port, deltas = int(sys.argv[1]), int(sys.argv[2])
    threads = [line.strip() for line in sys.stdin if line.strip()]
    arrivals: dict[str, dict[int, float]] = {}
    readies = [asyncio.Event() for _ in threads]
    watchers = [
        asyncio.create_task(watch(port, t, deltas, r, arrivals))
        for t, r in zip(threads, readies, strict=True)
    ]
    await asyncio.gather(*(r.wait() for r in readies))
    print("ready", flush=True)
    await asyncio.wait_for(asyncio.gather(*watchers), 120)
    print(orjson.dumps(arrivals, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
