"""Benchmark: how soon a reader wakes for new work, on one Redis and on a cluster.

    python -m bench.wake [--samples 300]
    python -m bench.wake --quick     # a few samples: checks that every row is produced

On one Redis a worker blocks on every partition's work stream in one
XREADGROUP. On Redis Cluster no command may span slots, so a bell per
partition (slipstream/doorbell.py) blocks on each stream, and the worker
reads only the partitions that rang. This measures, from the moment an entry
is appended (XADD returned) until the reader holds it: on one Redis, one
blocking XREAD of all 16 streams; on a 3-master cluster (its own, from
tests/redis_cluster.py), the bells' ring and then a read of the stream that
rang. Loopback, one process appending and reading: it is the wake path's own
cost, round trips included, and nothing of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.live_latency import redis_server
from slipstream.backend import Backend, as_entries
from slipstream.doorbell import Doorbell
from slipstream.keys import Partition
from slipstream.supervise import run_loops
from tests.redis_cluster import Cluster

PARTITIONS = 16
STREAMS = [Partition(n).key("wake-bench") for n in range(PARTITIONS)]

Sample = Callable[[str], Awaitable[float]]


async def one_redis(url: str, samples: int) -> list[float]:
    backend = Backend.connect(url)
    reader = backend.reader()
    cursors = dict.fromkeys(STREAMS, "0-0")
    try:

        async def wake(stream: str) -> float:
            waiting = asyncio.create_task(
                backend.xread(reader, dict(cursors), count=1, block_ms=5_000)
            )
            await asyncio.sleep(0.002)  # let the read block first, as an idle worker's does
            began = time.perf_counter()
            await backend.client.xadd(stream, {"n": "1"})
            reply = await waiting
            took = time.perf_counter() - began
            for name, entries in reply:
                cursors[name] = entries[-1][0]
            return took

        return await _measure(wake, samples)
    finally:
        await backend.release(reader)
        await backend.close()


async def cluster(url: str, samples: int) -> list[float]:
    backend = Backend.connect(url)
    bell = Doorbell(backend, STREAMS, name="bench")
    stop = asyncio.Event()
    bells = asyncio.create_task(run_loops(bell.loops(), stop, None))
    cursors = dict.fromkeys(STREAMS, "0-0")
    try:
        await bell.wait(1.0)  # all start rung

        async def wake(stream: str) -> float:
            await asyncio.sleep(0.002)  # let the bells block again
            bell.take()  # a listener's first pass may ring late: not this sample's
            began = time.perf_counter()
            await backend.client.xadd(stream, {"n": "1"})
            while stream not in await bell.wait(5.0):
                pass
            entries = as_entries(await backend.client.xrange(stream, f"({cursors[stream]}"))
            took = time.perf_counter() - began
            cursors[stream] = str(entries[-1][0])
            return took

        return await _measure(wake, samples)
    finally:
        stop.set()
        await bells
        await bell.close()
        await backend.close()


async def _measure(wake: Sample, samples: int) -> list[float]:
    for n in range(min(20, samples)):  # connections made, scripts loaded: not measured
        await wake(STREAMS[n % PARTITIONS])
    return [await wake(STREAMS[n % PARTITIONS]) * 1000 for n in range(samples)]


def _row(name: str, took: list[float]) -> str:
    ordered = sorted(took)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"| {name} | {statistics.median(took):.2f} | {p99:.2f} | {len(took)} |"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="a few samples")
    args = parser.parse_args()
    samples = 5 if args.quick else args.samples
    with redis_server() as url:
        single = await one_redis(url, samples)
    nodes = Cluster(Path(tempfile.mkdtemp(prefix="slipstream-wake-")))
    try:
        nodes.start(masters=3, replicas=0)
        clustered = await cluster(nodes.url, samples)
    finally:
        nodes.stop()
    print("| append → reader holds it | median ms | p99 ms | samples |")
    print("|---|---|---|---|")
    print(_row("one Redis: one blocking XREAD of 16 streams", single))
    print(_row("3-master cluster: 16 bells, then a read of the one that rang", clustered))


if __name__ == "__main__":
    asyncio.run(main())
