"""Benchmark: searching 10,000 threads (GET /api/threads?q=).

    python -m bench.search [--threads 10000] [--queries 200]

Starts its own redis-server (or uses REDIS_URL; then it must be a Redis no
one else writes to while it runs), writes the threads through the real append
script (a title, then a few questions and completed answers each, ~1,700
characters of text a thread, words drawn from a Zipf-like vocabulary of 20,000
words, so a few words are in nearly every thread and most in very few), folds
them with the real projector (which builds the search index as it folds: its
time is printed too), then times each kind of query, both in this process
(`projections.search`, what the route calls: the matches and their summaries
and snippets, 50 at most) and over HTTP through a `python -m service` web
process (auth none: every thread is visible, the largest set to filter).
Prints a table of median and p99 milliseconds per kind.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from bench.live_latency import percentile, web_process
from bench.projector_cost import redis_for_bench
from projections.projector import Projector
from projections.search import Search, query_words
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace, new_id, new_run_id, new_thread_id
from slipstream.store import Append, EventStore

SEED = 20261206
LIMIT = 50
# Made from text (a word list reads better than a list literal of 150 strings).
COMMON = (  # noqa: SIM905
    "the of and to a in is it you that he was for on are as with they be at one have this "
    "from or had by word but what some we can out other were all there when up use your how "
    "said an each she which do their time if will way about many then them write would like "
    "so these her long make thing see him two has look more day could go come did number "
    "sound no most people my over know water than call first who may down side been now find"
).split(" ")
TOPICS = (  # noqa: SIM905
    "redis stream latency queue worker retry timeout cache index shard cluster replica "
    "python server client socket thread process memory disk network request response error "
    "deploy config token session user account invoice payment order customer report chart "
    "budget schedule meeting recipe garden travel flight hotel museum history physics music"
).split(" ")
RARE = "quetzalcoatl"  # planted in RARE_IN threads
RARE_IN = 5
QUERIES = [
    ("common word", "the"),
    ("topic word", "latency"),
    ("two words", "redis timeout"),
    ("rare word", RARE),
    ("no match", "zyxwvutsrq"),
    ("common + rare", f"the {RARE}"),
]


class Vocabulary:
    """Words by a Zipf-like law: the commonest English words first, then topic words,
    then made-up words (syllables), the n-th word weighted 1/n."""

    def __init__(self, rng: random.Random, size: int = 20_000) -> None:
        syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
        made: set[str] = set()
        while len(made) < size - len(COMMON) - len(TOPICS):
            made.add("".join(rng.choices(syllables, k=rng.randint(2, 4))))
        self.words = [*COMMON, *TOPICS, *sorted(made)]
        self.cumulative = list(itertools.accumulate(1 / (n + 1) for n in range(len(self.words))))
        self.rng = rng

    def sentence(self, words: int) -> str:
        chosen = self.rng.choices(self.words, cum_weights=self.cumulative, k=words)
        return chosen[0].capitalize() + " " + " ".join(chosen[1:]) + "."

    def text(self, words: int) -> str:
        sentences = []
        while words > 0:
            length = min(words, self.rng.randint(6, 18))
            sentences.append(self.sentence(length))
            words -= length
        return " ".join(sentences)


def thread_events(vocab: Vocabulary, thread_id: str, rare: bool) -> list[ev.Event]:
    events: list[ev.Event] = [ev.ThreadCreated(title=vocab.sentence(4).rstrip("."))]
    for turn in range(vocab.rng.randint(1, 3)):
        run_id, message_id, reply_id = new_run_id(thread_id), new_id("m"), new_id("m")
        answer = vocab.text(vocab.rng.randint(60, 200))
        if rare and turn == 0:
            answer += f" The word {RARE} is here."
        events += [
            ev.MessageSent(
                message_id=message_id,
                content=vocab.text(vocab.rng.randint(8, 30)),
                agent="assistant",
                run_id=run_id,
            ),
            ev.RunRequested(
                run_id=run_id, message_id=message_id, reply_id=reply_id, agent="assistant"
            ),
            ev.RunStarted(run_id=run_id, attempt=1, worker="bench:1:a", token=1),
            ev.MessageCompleted(run_id=run_id, message_id=reply_id, text=answer),
            ev.RunCompleted(run_id=run_id),
        ]
    return events


async def write_threads(store: EventStore, count: int) -> int:
    """Append `count` threads, 200 per pipeline; returns the characters of text written."""
    rng = random.Random(SEED)
    vocab = Vocabulary(rng)
    rare = set(rng.sample(range(count), RARE_IN))
    chars = 0
    for start in range(0, count, 200):
        batch: list[Append] = []
        for n in range(start, min(count, start + 200)):
            thread_id = new_thread_id()
            events = thread_events(vocab, thread_id, n in rare)
            chars += sum(len(getattr(e, "content", "") or getattr(e, "text", "")) for e in events)
            batch.append(Append(thread_id, events, existence="new"))
        for result in await store.append_many(batch):
            if isinstance(result, Exception):
                raise result
    return chars


@contextmanager
def timing(samples: list[float]) -> Iterator[None]:
    """Adds the milliseconds the block took to `samples`."""
    started = time.perf_counter()
    yield
    samples.append((time.perf_counter() - started) * 1000)


async def in_process(search: Search, q: str, runs: int) -> tuple[list[float], int]:
    samples: list[float] = []
    hits = 0
    for _ in range(runs):
        with timing(samples):
            words = query_words(q)
            hits = len(
                await search.hits(await search.matches(words, user=None, limit=LIMIT), words)
            )
    return samples, hits


async def over_http(port: int, q: str, runs: int) -> list[float]:
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(runs):
            with timing(samples):
                response = await http.get("/api/threads", params={"q": q, "limit": LIMIT})
            response.raise_for_status()
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200, help="timed runs of each query")
    args = parser.parse_args()
    partitions = Settings.from_env({}).partitions  # the web process's, from the same env
    with redis_for_bench() as url:
        backend = Backend.connect(url)
        try:
            store = EventStore(backend, Keyspace(partitions))
            started = time.perf_counter()
            chars = await write_threads(store, args.threads)
            wrote = time.perf_counter() - started
            started = time.perf_counter()
            projector = Projector(backend, store, "bench", batch=100)
            await projector.run_once()
            folded = time.perf_counter() - started
            words = 0
            async for _ in backend.client.scan_iter(match="ss:*:search:w:*", count=1000):
                words += 1
            memory = (await backend.client.info("memory"))["used_memory_human"]
            print(
                f"\n{args.threads} threads, {chars / args.threads:.0f} characters of text each; "
                f"written in {wrote:.1f} s, folded and indexed in {folded:.1f} s "
                f"({args.threads / folded:.0f} threads/s); {words} posting sets; "
                f"Redis uses {memory}"
            )
            search = Search(backend.client, store.keys)
            rows = []
            with web_process(url) as port:
                for label, q in QUERIES:
                    await in_process(search, q, 5)  # warm up
                    await over_http(port, q, 5)
                    local, hits = await in_process(search, q, args.queries)
                    remote = await over_http(port, q, args.queries)
                    rows.append((label, q, hits, local, remote))
        finally:
            await backend.close()
    print(f"\nSearch latency, ms ({args.queries} runs each, at most {LIMIT} hits with snippets)")
    header = ("query", "q", "hits", "median", "p99", "HTTP median", "HTTP p99")
    print(f"{header[0]:<14} {header[1]:<20} " + " ".join(f"{h:>11}" for h in header[2:]))
    for label, q, hits, local, remote in rows:
        print(
            f"{label:<14} {q:<20} {hits:>11} {statistics.median(local):>11.2f} "
            f"{percentile(local, 0.99):>11.2f} {statistics.median(remote):>11.2f} "
            f"{percentile(remote, 0.99):>11.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
