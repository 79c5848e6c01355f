"""Benchmark: takeover after kill -9, cancel latency, and run throughput.

    python -m bench.runs [--trials 5] [--runs 400]

Starts its own redis-server and real `python -m consumers` processes; this
process sends messages through the same commands the web API uses and
watches the partition feeds. Prints three tables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.feeds import count_until, feed_ends
from bench.live_latency import ROOT, redis_server
from service import commands
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace
from slipstream.store import EventStore

PARTITIONS = 16


@contextmanager
def workers(redis_url: str, count: int, **env: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    environment = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SLIPSTREAM_LOG_LEVEL": os.environ.get("SLIPSTREAM_LOG_LEVEL", "WARNING"),
        "SLIPSTREAM_PARTITIONS": str(PARTITIONS),
        "SLIPSTREAM_LLM": "scripted",
        **env,
    }
    started = [
        subprocess.Popen([sys.executable, "-m", "consumers"], cwd=ROOT, env=environment)
        for _ in range(count)
    ]
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
        for process in started:
            process.wait()


async def wait_event(
    store: EventStore, thread_id: str, kind: str, after: str = "0-0", **match: object
) -> tuple[str, float]:
    """Block on the thread stream until an event of `kind` appears; (its id, when seen)."""
    key = store.stream_key(thread_id)
    reader = store.backend.reader()
    try:
        cursor = after
        while True:
            reply = await reader.xread({key: cursor}, block=10_000)
            now = time.perf_counter()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    cursor = entry_id
                    if fields.get("type") == kind and all(
                        str(v) in fields.get("body", "") for v in match.values()
                    ):
                        return entry_id, now
            if not reply:
                raise TimeoutError(f"no {kind} on {key}")
    finally:
        await store.backend.release(reader)


async def takeover(store: EventStore, url: str, trials: int, lease_ms: int) -> list[float]:
    times = []
    for i in range(trials):
        await store.redis.flushall()  # each trial starts clean: no runs left from the last
        with workers(
            url,
            2,
            SLIPSTREAM_LEASE_MS=str(lease_ms),
            SLIPSTREAM_SCRIPTED_DELAY_MS="50",
            SLIPSTREAM_SCRIPTED_WORDS="400",
        ) as procs:
            thread_id, _ = await commands.create_thread(store)
            await commands.send_message(store, thread_id, f"takeover {i}", "assistant")
            started_id, _ = await wait_event(store, thread_id, "run.started")
            await wait_event(store, thread_id, "message.delta", after=started_id)
            events = await store.read(thread_id)
            worker = next(e.event for e in events if e.event.type == "run.started")
            pid = int(worker.worker.split(":")[1])  # type: ignore[union-attr]
            assert pid in {p.pid for p in procs}
            killed_at = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            _, seen = await wait_event(
                store, thread_id, "run.started", after=started_id, attempt='"attempt":2'
            )
            times.append(seen - killed_at)
    return times


async def cancel_latency(store: EventStore, url: str, trials: int) -> list[float]:
    times = []
    with workers(url, 1, SLIPSTREAM_SCRIPTED_DELAY_MS="400", SLIPSTREAM_SCRIPTED_WORDS="100"):
        for i in range(trials):
            thread_id, _ = await commands.create_thread(store)
            sent = await commands.send_message(store, thread_id, f"cancel {i}", "assistant")
            first, _ = await wait_event(store, thread_id, "message.delta")
            began = time.perf_counter()
            await commands.cancel_run(store, sent.run_id)
            _, seen = await wait_event(store, thread_id, "run.cancelled", after=first)
            times.append(seen - began)
    return times


async def throughput(store: EventStore, url: str, processes: int, runs: int) -> float:
    with workers(url, processes, SLIPSTREAM_SCRIPTED_DELAY_MS="0", SLIPSTREAM_SCRIPTED_WORDS="30"):
        threads = [(await commands.create_thread(store))[0] for _ in range(runs)]
        await asyncio.sleep(1.0)  # let the workers connect and create their groups first
        feeds = await feed_ends(store)
        began = time.perf_counter()
        await asyncio.gather(*(commands.send_message(store, t, "go", "assistant") for t in threads))
        await count_until(store, feeds, lambda counts: counts["run.completed"] >= runs)
        return runs / (time.perf_counter() - began)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--lease-ms", type=int, default=2000)
    args = parser.parse_args()
    settings = Settings.from_env({"SLIPSTREAM_PARTITIONS": str(PARTITIONS)})
    with redis_server() as url:
        backend = Backend.connect(url)
        store = EventStore(backend, Keyspace(settings.partitions))
        lease = args.lease_ms
        took = await takeover(store, url, args.trials, lease)
        print(f"\nTakeover after kill -9 (lease {lease} ms, {args.trials} trials)")
        print(f"{'median s':>10} {'min s':>8} {'max s':>8} {'median - lease':>15}")
        print(
            f"{statistics.median(took):>10.2f} {min(took):>8.2f} {max(took):>8.2f} "
            f"{statistics.median(took) - lease / 1000:>15.2f}"
        )
        cancels = [c * 1000 for c in await cancel_latency(store, url, args.trials * 2)]
        print(
            f"\nCancel -> run.cancelled, model between tokens (400 ms/word, {len(cancels)} trials)"
        )
        print(f"{'median ms':>10} {'min ms':>8} {'max ms':>8}")
        print(f"{statistics.median(cancels):>10.1f} {min(cancels):>8.1f} {max(cancels):>8.1f}")
        print(f"\nThroughput: {args.runs} runs on {args.runs} threads, scripted model, no delay")
        print(f"{'workers':>8} {'runs/s':>8} {'vs 1':>6}")
        base = None
        for count in (1, 2, 4):
            rate = await throughput(store, url, count, args.runs)
            base = base or rate
            print(f"{count:>8} {rate:>8.1f} {rate / base:>6.2f}")
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
