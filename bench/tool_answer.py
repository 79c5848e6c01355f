"""Benchmark: what one researcher answer that uses two tools costs, and how fast it goes on.

    python -m bench.tool_answer [--trials 20]

Starts its own redis-server and one real `python -m consumers` worker with the
scripted model; sends the researcher a message whose directives make it call
`calculator` and `now`, then counts, per answer: model calls (`model.usage`),
tool calls (`tool.called`), the events of the run, the Redis stream entries it
added (thread stream and partition feed), and the Redis commands the server ran
(`INFO commandstats`: the send's and the worker's). Times, seen by one reader
blocked on the thread stream: a tool's `tool.result` to the model's next text
(`message.delta`) and the message to `run.completed`. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter
from typing import cast

from bench.live_latency import redis_server
from bench.runs import PARTITIONS, workers
from service import commands
from slipstream.backend import Backend, Entry
from slipstream.keys import Keyspace
from slipstream.store import EventStore

MESSAGE = (
    '[[tool calculator {"expression": "17 * 23"}]] [[tool now {"zone": "Europe/Paris"}]] '
    "What is 17 times 23, and what time is it in Paris?"
)


async def commands_run(store: EventStore) -> int:
    stats = await store.redis.info("commandstats")
    return sum(int(v["calls"]) for v in cast(dict[str, dict[str, int]], stats).values())


async def stream_entries(store: EventStore, thread_id: str) -> int:
    total = int(await store.redis.xlen(store.stream_key(thread_id)))
    for part in store.keys.all():
        total += int(await store.redis.xlen(part.feed))
    return total


async def one_answer(store: EventStore) -> dict[str, float]:
    thread_id, _ = await commands.create_thread(store)
    entries_before = await stream_entries(store, thread_id)
    commands_before = await commands_run(store)
    key = store.stream_key(thread_id)
    cursor = cast(list[Entry], await store.redis.xrevrange(key, count=1))[0][0]
    reader = store.backend.reader()
    seen: list[tuple[str, float, int]] = []
    reads = 0
    try:
        began = time.perf_counter()
        await commands.send_message(store, thread_id, MESSAGE, "researcher")
        while not seen or seen[-1][0] not in {"run.completed", "run.failed"}:
            reads += 1
            reply = cast(
                list[tuple[str, list[Entry]]], await reader.xread({key: cursor}, block=10_000)
            )
            now = time.perf_counter()
            if not reply:
                raise TimeoutError(f"no run end on {key}; saw {[k for k, _, _ in seen]}")
            for _, entries in reply:
                for entry_id, fields in entries:
                    cursor = entry_id
                    seen.append((fields["type"], now, int(entry_id.split("-")[0])))
    finally:
        await store.backend.release(reader)
    # This process's own reads are taken off (its XREVRANGE and XREADs, the XLENs
    # and the INFO itself); the send's commands stay in: the API makes them.
    own = 1 + reads + (1 + len(store.keys.all())) + 1
    redis_commands = await commands_run(store) - commands_before - own
    added = await stream_entries(store, thread_id) - entries_before
    kinds = Counter(kind for kind, _, _ in seen)
    if kinds["run.completed"] != 1:
        raise RuntimeError(f"the answer did not complete: {dict(kinds)}")
    # The first delta after the last tool.result: the model's next text.
    last = max(i for i, (kind, _, _) in enumerate(seen) if kind == "tool.result")
    result, text = seen[last], next(e for e in seen[last:] if e[0] == "message.delta")
    return {
        "model calls": kinds["model.usage"],
        "tool calls": kinds["tool.called"],
        "events": len(seen),
        "stream entries": added,
        "redis commands": redis_commands,
        # Seen by the reader: 0 when both came in one read, so also by the entry ids
        # (the Redis server's clock, whole milliseconds).
        "tool.result → next text, read (ms)": 1000 * (text[1] - result[1]),
        "tool.result → next text, ids (ms)": text[2] - result[2],
        "message → run.completed (ms)": 1000 * (seen[-1][1] - began),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with redis_server() as url:
        backend = Backend.connect(url)
        store = EventStore(backend, Keyspace(PARTITIONS))
        try:
            with workers(url, 1, SLIPSTREAM_SCRIPTED_DELAY_MS="0", SLIPSTREAM_SCRIPTED_WORDS="30"):
                await one_answer(store)  # the worker's first run also creates its groups
                rows = [await one_answer(store) for _ in range(args.trials)]
        finally:
            await backend.close()
    print(f"one researcher answer with two tools, {args.trials} answers, scripted model")
    print(f"{'':32} {'median':>10} {'min':>10} {'max':>10}")
    for name in rows[0]:
        values = [row[name] for row in rows]
        print(
            f"{name:32} {statistics.median(values):>10.2f} {min(values):>10.2f} "
            f"{max(values):>10.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
