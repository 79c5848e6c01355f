"""Benchmark: journaled workflow steps per second.

    python -m bench.workflow_steps [--workers 2] [--small 100] [--large 10000]

Starts its own redis-server and `python -m consumers` worker processes (with
SLIPSTREAM_WORKFLOWS=bench.noop_workflows), starts 100 workflows of 5 no-op
steps and then 10,000 of 4, and counts steps completed per second from the
first message to the last run.completed. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.feeds import count_until, feed_ends
from bench.live_latency import redis_server
from bench.runs import PARTITIONS, workers
from slipstream import threads
from slipstream.backend import Backend
from slipstream.keys import Keyspace
from slipstream.store import EventStore


async def round_of(store: EventStore, agent: str, runs: int, steps: int) -> tuple[float, int]:
    thread_ids = []
    for start in range(0, runs, 500):
        made = await asyncio.gather(
            *(threads.create_thread(store) for _ in range(min(500, runs - start)))
        )
        thread_ids += [thread_id for thread_id, _ in made]
    feeds = await feed_ends(store)
    began = time.perf_counter()
    for start in range(0, runs, 500):
        await asyncio.gather(
            *(threads.send_message(store, t, "go", agent) for t in thread_ids[start : start + 500])
        )

    def classify(fields: dict[str, str]) -> str | None:
        kind = fields.get("type")
        if kind == "step.completed":
            return "step" if '"kind":"step"' in fields["body"] else None
        return kind

    counts = await count_until(
        store, feeds, lambda counts: counts["run.completed"] >= runs, classify=classify
    )
    journaled = counts["step"]
    elapsed = time.perf_counter() - began
    assert journaled == runs * steps, f"{journaled} steps journaled, expected {runs * steps}"
    return elapsed, journaled


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=10_000)
    args = parser.parse_args()
    with (
        redis_server() as url,
        workers(url, args.workers, SLIPSTREAM_WORKFLOWS="bench.noop_workflows"),
    ):
        backend = Backend.connect(url)
        store = EventStore(backend, Keyspace(PARTITIONS))
        await asyncio.sleep(1.5)  # the workers start and create their groups
        print(f"\nJournaled no-op steps, {args.workers} worker processes")
        print(
            f"{'workflows':>10} {'steps each':>11} {'steps':>8} {'seconds':>8} "
            f"{'steps/s':>8} {'runs/s':>8}"
        )
        for runs, steps in ((args.small, 5), (args.large, 4)):
            elapsed, journaled = await round_of(store, f"noop{steps}", runs, steps)
            print(
                f"{runs:>10} {steps:>11} {journaled:>8} {elapsed:>8.2f} "
                f"{journaled / elapsed:>8.0f} {runs / elapsed:>8.1f}"
            )
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
