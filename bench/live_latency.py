"""Benchmark: delta append -> websocket arrival latency, and events per 100 words.

    python -m bench.live_latency [--answers 1,10,100] [--deltas 40]

Starts its own redis-server and a `python -m service` web process on free
loopback ports. For latency this process plays the worker: it appends deltas
through the real append script, and a separate process (bench.watchers)
holds one websocket per answer and notes when each delta arrives; both read
CLOCK_MONOTONIC, so there is no skew. For write volume it
runs the real worker on the scripted model at several speeds and counts the
entries each answer wrote. Prints two tables.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import redis

from consumers.llm.scripted import ScriptedLLM
from consumers.worker import Worker
from service import commands
from service.embedded import free_port
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace
from slipstream.store import Append, EventStore

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def redis_server() -> Iterator[str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="slipstream-bench-")
    process = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def web_process(redis_url: str) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "SLIPSTREAM_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency_round(store: EventStore, port: int, answers: int, deltas: int) -> list[float]:
    """`answers` threads stream at once, one delta per thread every 20 ms.

    The sockets live in a process of their own (bench.watchers), so the
    writer's work and theirs do not queue behind each other in one event loop.
    """
    threads = [(await commands.create_thread(store))[0] for _ in range(answers)]
    sent_at: dict[tuple[str, int], float] = {}
    watchers = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.watchers",
        str(port),
        str(deltas),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,  # the arrivals come back as one JSON line
    )
    assert watchers.stdin is not None and watchers.stdout is not None
    watchers.stdin.write("\n".join(threads).encode() + b"\n")
    await watchers.stdin.drain()
    watchers.stdin.close()
    assert (await watchers.stdout.readline()).strip() == b"ready"

    async def write(thread_id: str) -> None:
        for seq in range(1, deltas + 1):
            delta = ev.MessageDelta(
                run_id=f"{thread_id}.aaaaaa",
                message_id="r",
                seq=seq,
                text="Some words of an answer. ",
            )
            sent_at[(thread_id, seq)] = time.perf_counter()
            await store.append(Append(thread_id, [delta]))
            await asyncio.sleep(0.02)

    await asyncio.gather(*(write(t) for t in threads))
    arrivals = orjson.loads(await asyncio.wait_for(watchers.stdout.readline(), 120))
    await watchers.wait()
    latencies = [
        arrived - sent_at[(thread_id, int(seq))]
        for thread_id, seen in arrivals.items()
        for seq, arrived in seen.items()
    ]
    assert len(latencies) == answers * deltas
    return latencies


async def write_volume(
    store: EventStore, settings: Settings, delay_ms: int, words: int
) -> dict[str, float]:
    thread_id, _ = await commands.create_thread(store)
    await commands.send_message(store, thread_id, f"volume at {delay_ms} ms", "assistant")
    worker = Worker(store.backend, store, ScriptedLLM(words=words, delay_ms=delay_ms), settings)
    await worker.run_once()
    stored = await store.read(thread_id)
    deltas = sum(1 for s in stored if s.event.type == "message.delta")
    run_entries = len(stored) - 3  # all but thread.created, message.sent, run.requested
    return {"deltas": deltas * 100 / words, "entries": run_entries * 100 / words}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--answers", default="1,10,100")
    parser.add_argument("--deltas", type=int, default=40)
    parser.add_argument("--words", type=int, default=300)
    args = parser.parse_args()
    settings = Settings.from_env({"SLIPSTREAM_PARTITIONS": "16"})
    with redis_server() as url, web_process(url) as port:
        backend = Backend.connect(url)
        store = EventStore(backend, Keyspace(settings.partitions))
        print("\nDelta append -> websocket arrival (one watcher per answer, 1 delta/20 ms each)")
        header = ("answers", "deltas", "median ms", "p90 ms", "p99 ms", "max ms")
        print(" ".join(f"{h:>10}" for h in header))
        for answers in (int(a) for a in args.answers.split(",")):
            lat = [x * 1000 for x in await latency_round(store, port, answers, args.deltas)]
            print(
                f"{answers:>8} {len(lat):>8} {statistics.median(lat):>10.2f} "
                f"{percentile(lat, 0.90):>10.2f} {percentile(lat, 0.99):>10.2f} {max(lat):>10.2f}"
            )

        print(f"\nEntries written per 100 words of answer (scripted model, {args.words} words)")
        print(f"{'ms/word':>8} {'words/s':>8} {'deltas':>8} {'all run events':>15}")
        for delay in (0, 10, 25, 40, 80):
            volume = await write_volume(store, dataclasses.replace(settings), delay, args.words)
            rate = "inf" if delay == 0 else f"{1000 / delay:.0f}"
            print(f"{delay:>8} {rate:>8} {volume['deltas']:>8.1f} {volume['entries']:>15.1f}")
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
