"""Benchmark: what one projector pass costs per delta, on short and long threads.

    python -m bench.projector_cost [--deltas 200] [--sizes 10,1000]

Starts its own redis-server (or uses REDIS_URL; then it must be a Redis no
one else writes to while it runs), builds threads of 10 and 1,000 messages
(half questions, half answers of ~400 characters), projects them, then
streams deltas into one new answer and runs one projector pass
(`Projector.project_thread`) after each delta. Per pass it measures:

- bytes written: the growth of the server's `total_net_input_bytes` (INFO
  stats) across the pass, i.e. every byte of every command the projector
  sent, script arguments included, less the INFO call itself;
- bytes read: the same for `total_net_output_bytes` (replies to the projector);
- CPU: `time.process_time()` around the pass, in this (the projector's) process.

Prints a row per thread size and the ratio of the largest to the smallest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.live_latency import redis_server
from projections.projector import Projector
from service import commands
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.keys import Keyspace, new_id, new_run_id
from slipstream.store import Append, EventStore

QUESTION = "How would you go about this one, and what should I watch out for? " * 2
ANSWER = "Here is a considered answer with a few sentences of reasonable length. " * 6


@contextmanager
def redis_for_bench() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with redis_server() as started:
        yield started


def exchange(run_id: str, text: str = ANSWER) -> list[ev.Event]:
    message_id, reply_id = new_id("m"), new_id("m")
    return [
        ev.MessageSent(message_id=message_id, content=QUESTION, agent="assistant", run_id=run_id),
        ev.RunRequested(run_id=run_id, message_id=message_id, reply_id=reply_id, agent="assistant"),
        ev.RunStarted(run_id=run_id, attempt=1, worker="bench:1:a", token=1),
        ev.MessageDelta(run_id=run_id, message_id=reply_id, seq=1, text=text),
        ev.MessageCompleted(run_id=run_id, message_id=reply_id, text=text),
        ev.RunCompleted(run_id=run_id),
    ]


async def thread_of(store: EventStore, messages: int) -> str:
    thread_id, _ = await commands.create_thread(store, "bench")
    for _ in range(messages // 2):
        await store.append(Append(thread_id, exchange(new_run_id(thread_id))))
    return thread_id


async def net_bytes(store: EventStore) -> tuple[int, int]:
    info = await store.redis.info("stats")
    return int(info["total_net_input_bytes"]), int(info["total_net_output_bytes"])


async def info_overhead(store: EventStore) -> tuple[int, int]:
    """What one INFO call adds to the counters, to take it out of each measurement."""
    first = await net_bytes(store)
    second = await net_bytes(store)
    return second[0] - first[0], second[1] - first[1]


async def measure(store: EventStore, messages: int, deltas: int) -> tuple[float, float, float]:
    """(bytes written, bytes read, CPU seconds) per pass with one new delta each."""
    thread_id = await thread_of(store, messages)
    projector = Projector(store.backend, store, f"bench-{messages}")
    run_id = new_run_id(thread_id)
    opening = exchange(run_id)[:3]
    await store.append(Append(thread_id, opening))
    assert isinstance(opening[1], ev.RunRequested)
    reply_id = opening[1].reply_id
    await projector.project_thread(thread_id)  # the view exists before measuring
    overhead_in, overhead_out = await info_overhead(store)
    written: list[int] = []
    read: list[int] = []
    cpu: list[float] = []
    for seq in range(1, deltas + 1):
        delta = ev.MessageDelta(run_id=run_id, message_id=reply_id, seq=seq, text="word ")
        await store.append(Append(thread_id, [delta]))
        before_in, before_out = await net_bytes(store)
        started = time.process_time()
        await projector.project_thread(thread_id)
        cpu.append(time.process_time() - started)
        after_in, after_out = await net_bytes(store)
        written.append(after_in - before_in - overhead_in)
        read.append(after_out - before_out - overhead_out)
    return statistics.mean(written), statistics.mean(read), statistics.median(cpu)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deltas", type=int, default=200)
    parser.add_argument("--sizes", default="10,1000", help="thread sizes in messages")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with redis_for_bench() as url:
        backend = Backend.connect(url)
        try:
            store = EventStore(backend, Keyspace(16))
            rows = {size: await measure(store, size, args.deltas) for size in sizes}
        finally:
            await backend.close()
    print(f"\nProjector cost per delta ({args.deltas} deltas into one answer, one pass each)")
    header = ("messages", "bytes written", "bytes read", "CPU ms")
    print(" ".join(f"{h:>14}" for h in header))
    for size, (written, read, cpu) in rows.items():
        print(f"{size:>14} {written:>14.0f} {read:>14.0f} {cpu * 1000:>14.3f}")
    small, large = rows[min(sizes)], rows[max(sizes)]
    ratios = [b / a if a else float("inf") for a, b in zip(small, large, strict=True)]
    print(f"{f'ratio {max(sizes)}/{min(sizes)}':>14} " + " ".join(f"{r:>14.2f}" for r in ratios))


if __name__ == "__main__":
    asyncio.run(main())
