"""The appending side of bench.cluster's append row, in a process of its own.

    python -m bench.appenders REDIS_URL PARTITIONS SECONDS TASKS [xadd] < ids, comma-separated

The thread ids come on stdin. Connects, prints "ready", waits for a line on
stdin (so every appender process starts at once), then runs TASKS coroutines
that append one answer delta at a time through `EventStore.append` (the append
script, as a worker's flush does) to the given threads, round robin, for
SECONDS. Prints the number of events appended and the seconds it took, as one
JSON object.

With `xadd` the same process writes the same entries with plain XADDs to the
same thread streams instead: one coroutine sends them TASKS to a pipeline, as
many in flight as the TASKS coroutines of the script keep. bench.versus sets
one process of each side by side: the append path against plain writes of
the same entries from the same process.

Several of these run at once in bench.cluster: one Python process is busy
packing commands and parsing replies well before one Redis is, so a single
appender would measure itself rather than the store.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from slipstream import codec
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.store import Append, EventStore


async def append_for(store: EventStore, threads: list[str], until: float) -> int:
    """Append deltas to `threads` in turn until `until`; how many were appended."""
    appended = 0
    while time.perf_counter() < until:
        thread_id = threads[appended % len(threads)]
        delta = ev.MessageDelta(
            run_id=f"{thread_id}.aaaaaa",
            message_id="r",
            seq=appended + 1,
            text="Some words of an answer. ",
        )
        await store.append(Append(thread_id, [delta]))
        appended += 1
    return appended


async def xadd_for(store: EventStore, threads: list[str], until: float, batch: int) -> int:
    """The same deltas as `append_for`, `batch` plain XADDs a round trip, until `until`."""
    appended = 0
    while time.perf_counter() < until:
        async with store.redis.pipeline(transaction=False) as pipe:
            for _ in range(batch):
                thread_id = threads[appended % len(threads)]
                delta = ev.MessageDelta(
                    run_id=f"{thread_id}.aaaaaa",
                    message_id="r",
                    seq=appended + 1,
                    text="Some words of an answer. ",
                )
                pipe.xadd(store.stream_key(thread_id), dict(codec.encode(delta)))
                appended += 1
            await pipe.execute()
    return appended


async def main() -> None:
    url, partitions = sys.argv[1], int(sys.argv[2])
    seconds, tasks = float(sys.argv[3]), int(sys.argv[4])
    plain = sys.argv[5:] == ["xadd"]
    threads = [t.strip() for t in sys.stdin.readline().split(",") if t.strip()]
    backend = Backend.connect(url)
    # As a worker builds it (an answer's deltas are not waited on in any case).
    settings = Settings.from_env({"SLIPSTREAM_PARTITIONS": str(partitions)})
    store = EventStore.from_settings(backend, settings)
    try:
        await store.redis.ping()  # connected (and, on a cluster, the layout known) before "go"
        shares = [threads[i::tasks] for i in range(tasks)]
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        began = time.perf_counter()
        if plain:
            counts = [await xadd_for(store, threads, began + seconds, tasks)]
        else:
            counts = await asyncio.gather(
                *(append_for(store, share, began + seconds) for share in shares if share)
            )
        took = time.perf_counter() - began
        print(orjson.dumps({"events": sum(counts), "seconds": took}).decode(), flush=True)
    finally:
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
