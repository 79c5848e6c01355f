"""Benchmark: the memory of a 1,000-word thread before and after compaction.

    python -m bench.compaction [--answers 10] [--words 100] [--delay-ms 40] [--flush-ms 50]

Starts its own redis-server (or uses REDIS_URL; then it must be a Redis no one else
writes to while it runs) and a whole system in this process (web, worker and
projector, tests/harness.py), with the scripted model answering `--answers`
questions of `--words` words each, at its shipped pace (a word every 40 ms, text
flushed every 50 ms: about a delta a word). Then it measures `MEMORY USAGE` of every
key that holds the thread (its stream, its stored view, its search index, the
partition's indexes of it, its runs' hashes, and the partition feed, which holds
copies of its events until it is trimmed), compacts the thread as the projector does
once its answers are older than SLIPSTREAM_COMPACT_AFTER (projections/compaction.py),
and measures again. Prints a table of bytes per key group.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
from collections import Counter

from bench.projector_cost import redis_for_bench
from projections.compaction import Compactor
from projections.thread_view import stream_ms
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Partition
from tests.conftest import TEST_ENV
from tests.harness import running_system
from tests.waits import until


def group_of(key: str, part: Partition, thread_id: str) -> str:
    if key == part.thread(thread_id):
        return "thread stream"
    if key == part.view(thread_id):
        return "stored view"
    if key == part.feed:
        return "partition feed (trimmed, not compacted)"
    if key.startswith(part.key("search")):
        return "search index"
    if key.startswith(part.key("run", "")):
        return "run hashes (expire)"
    return "other indexes"


async def measure(backend: Backend, part: Partition, thread_id: str) -> Counter[str]:
    """Bytes per key group: every key of the thread's partition (the thread is alone there)."""
    sizes: Counter[str] = Counter()
    async for raw in backend.client.scan_iter(match=f"ss:{part.tag}:*", count=1000):
        key = str(raw)
        used = await backend.client.memory_usage(key, samples=0)
        sizes[group_of(key, part, thread_id)] += int(used or 0)
    return sizes


async def run(args: argparse.Namespace, url: str) -> None:
    settings = dataclasses.replace(
        Settings.from_env(TEST_ENV),
        scripted_words=args.words,
        scripted_delay_ms=args.delay_ms,
        flush_ms=args.flush_ms,
    )
    backend = Backend.connect(url)
    try:
        await backend.client.flushall()
        async with running_system(backend, settings) as system:
            thread_id = await system.new_thread()
            for n in range(args.answers):
                sent = await system.send(thread_id, f"question {n + 1}: tell me more")
                await system.wait_for_run(thread_id, sent["run_id"], within=120)
            stored = await system.runtime.store.read(thread_id)
            last = stored[-1].id

            async def folded() -> bool:
                return (await system.runtime.views.read(thread_id)).view.last_event_id == last

            await until(folded, within=20)
            history = await system.view(thread_id)
            part = system.runtime.store.keys.partition(thread_id)
            before = await measure(backend, part, thread_id)
            entries_before = len(stored)
            deltas = sum(isinstance(s.event, ev.MessageDelta) for s in stored)
            words = sum(
                len(s.event.text.split())
                for s in stored
                if isinstance(s.event, ev.MessageCompleted)
            )
            compactor = Compactor(backend, system.runtime.store, after_s=1)
            removed = await compactor.compact(thread_id, now_ms=stream_ms(last) + 1000)
            after = await measure(backend, part, thread_id)
            assert await system.view(thread_id) == history, "the history changed"
            entries_after = len(await system.runtime.store.read(thread_id))
    finally:
        await backend.close()

    info = f"{args.answers} answers, {words} words, {deltas} deltas"
    print(f"# python -m bench.compaction ({info}; {datetime.date.today().isoformat()})")
    print(
        f"thread stream entries: {entries_before} before, {entries_after} after ({removed} removed)"
    )
    print()
    print("| keys | before (bytes) | after (bytes) |")
    print("|---|---:|---:|")
    for group in sorted(set(before) | set(after), key=lambda g: -before[g]):
        print(f"| {group} | {before[group]:,} | {after[group]:,} |")
    kept = [g for g in before if not g.startswith(("partition feed", "run hashes"))]
    print(
        f"| **the thread's lasting keys** | **{sum(before[g] for g in kept):,}** "
        f"| **{sum(after[g] for g in kept):,}** |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--answers", type=int, default=10)
    parser.add_argument("--words", type=int, default=100, help="words per answer")
    parser.add_argument("--delay-ms", type=int, default=40, help="the scripted model's pace")
    parser.add_argument("--flush-ms", type=int, default=50, help="SLIPSTREAM_FLUSH_MS")
    args = parser.parse_args()
    with redis_for_bench() as url:
        asyncio.run(run(args, url))


if __name__ == "__main__":
    main()
