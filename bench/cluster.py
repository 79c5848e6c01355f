"""Benchmark: the same system on one Redis and on a Redis Cluster of 3 masters.

    python -m bench.cluster [--rounds 3] [--runs 400] [--append-s 3] [--rows runs1,runs2,append]
    python -m bench.cluster --quick     # tiny sizes: checks that every row is produced

Starts its own redis-server and its own Redis Cluster of 3 masters and 3
replicas (tests/redis_cluster.py, the cluster the tests use), all on loopback
and none persisting to disk, and measures each in turn, alternating which goes
first from round to round:

- no-op runs/s: real `python -m consumers` processes (1, then 2) on the
  scripted model (a 20-word answer, no delay), as bench.runs does; this
  process creates one thread per run, sends one message to each through the
  web API's own command and counts `run.completed` on the partition feeds.
  No projector runs (a run does not need one).
- appended events/s: processes of bench.appenders, each with several
  coroutines, append one answer delta per call through the store's append
  script to threads spread over every partition, for a fixed time.
- Redis commands and server time per run: INFO commandstats summed over the
  masters during the 1-worker runs round, divided by its runs. It counts the
  sends and everything the worker did meanwhile (its idle loops too), and the
  commands scripts run (as commandstats does), not this process's reads of
  the feeds, INFO, CONFIG or the replicas' REPLCONF acks.

Both run with their defaults: on the cluster a message's append and a run's
last append wait for one replica (SLIPSTREAM_WAIT_REPLICAS), on one Redis
nothing waits.

Prints one markdown table: the median and min-max over the rounds, each row
with the command that measures it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import orjson
import redis
from redis.asyncio import Redis

from bench.feeds import feed_ends
from bench.live_latency import ROOT, redis_server
from bench.runs import PARTITIONS, workers
from service import commands
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import WORKER_REGISTRY
from slipstream.store import EventStore
from tests.redis_cluster import Cluster

WORDS = 20  # a short scripted answer: a no-op run
# Commands of this process and of replication, not of a run.
NOT_RUN_COMMANDS = frozenset({"info", "config", "replconf"})
ROWS = ("runs1", "runs2", "append")
SENDS_AT_ONCE = 32  # the command pool holds 64 connections


@dataclass(frozen=True)
class Sizes:
    quick: bool
    rounds: int
    runs: int
    append_s: float
    appenders: int
    append_tasks: int

    @property
    def append_threads(self) -> int:
        return 2 * self.appenders * self.append_tasks

    def runs_within_s(self) -> float:
        """How long a runs round may take before it is reported as unfinished."""
        return 20 + self.runs / 10


@dataclass
class Target:
    """One Redis deployment under test: its URL and its masters' ports now."""

    name: str
    url: str
    master_ports: Callable[[], list[int]]

    def _each_master(self) -> Iterator[redis.Redis]:
        for port in self.master_ports():
            with redis.Redis(port=port, socket_timeout=5, decode_responses=True) as client:
                yield client

    def flush(self) -> None:
        for client in self._each_master():
            client.flushall()

    def reset_stats(self) -> None:
        for client in self._each_master():
            client.config_resetstat()

    def command_stats(self) -> tuple[int, int]:
        """Calls and server µs since `reset_stats`, summed over the masters."""
        calls = micros = 0
        for client in self._each_master():
            for name, stat in client.info("commandstats").items():
                command = name.removeprefix("cmdstat_").split("|")[0]
                if command not in NOT_RUN_COMMANDS:
                    calls += int(stat["calls"])
                    micros += int(stat["usec"])
        return calls, micros


@dataclass
class RunsResult:
    rate: float | None  # runs/s; None when the round did not finish in time
    completed: int
    runs: int
    seconds: float
    commands: float = 0.0  # per run
    micros: float = 0.0  # per run
    later_attempts: int = 0


class Completions:
    """Counts `run.completed` on every partition feed, from their ends when `start` ran.

    On a cluster each feed is read on its own (a read naming two partitions'
    keys is refused: CROSSSLOT); on one Redis all in one XREAD. `reads` is how
    many reads it made, to take out of the command count.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.reads = 0
        self.completed = 0
        # Runs started again (a worker lost its lease): a slow round with some was
        # waiting for leases to lapse, not working.
        self.later_attempts = 0
        self._reached = asyncio.Event()
        self._target = 0
        self._feeds: dict[str, str] = {}
        self._reader: Redis | None = None

    async def start(self) -> None:
        """Note the feeds' ends and connect, so that none of it counts as the runs' work."""
        self._feeds = await feed_ends(self.store)
        self._reader = self.store.backend.reader()
        for feed, cursor in self._feeds.items():  # connects to each feed's node
            await self.store.backend.xread(self._reader, {feed: cursor}, count=1, block_ms=0)

    async def wait(self, target: int, within_s: float) -> int:
        """Until `target` runs completed or `within_s` passed; how many completed."""
        self._target = target
        reader = self._reader
        assert reader is not None, "start() first"
        if self.store.backend.cluster:
            tasks = [
                asyncio.create_task(self._follow(reader, {feed: cursor}))
                for feed, cursor in self._feeds.items()
            ]
        else:
            tasks = [asyncio.create_task(self._follow(reader, self._feeds))]
        reached: asyncio.Task[object] = asyncio.create_task(self._reached.wait())
        try:
            # Until the count is reached, a reader fails, or time is up.
            await asyncio.wait(
                [reached, *tasks], timeout=within_s, return_when=asyncio.FIRST_COMPLETED
            )
            for task in tasks:
                if task.done() and (failed := task.exception()) is not None:
                    raise failed
        finally:
            reached.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(reached, *tasks, return_exceptions=True)
            await self.store.backend.release(reader)
        return self.completed

    async def _follow(self, reader: Redis, feeds: dict[str, str]) -> None:
        cursors = dict(feeds)
        while not self._reached.is_set():
            reply = await self.store.backend.xread(reader, cursors, count=5000, block_ms=1000)
            self.reads += 1
            for feed, entries in reply:
                cursors[feed] = entries[-1][0]
                for _, fields in entries:
                    kind = fields.get("type")
                    if kind == "run.completed":
                        self.completed += 1
                    elif kind == "run.started" and '"attempt":1,' not in fields.get("body", ""):
                        self.later_attempts += 1
            if self.completed >= self._target:
                self._reached.set()


def web_store(backend: Backend) -> EventStore:
    """The store as a web process builds it: on a cluster its sends wait for a replica."""
    settings = Settings.from_env({"SLIPSTREAM_PARTITIONS": str(PARTITIONS)})
    return EventStore.from_settings(backend, settings)


async def registered(store: EventStore, count: int, within_s: float = 30) -> None:
    """Until `count` workers have registered: their groups exist and they read."""
    async with asyncio.timeout(within_s):
        # The workers are other processes: nothing here can be awaited but Redis.
        while await store.redis.zcard(WORKER_REGISTRY) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def send(store: EventStore, thread_id: str, senders: asyncio.Semaphore) -> None:
    async with senders:
        await commands.send_message(store, thread_id, "go", "assistant")


async def runs_round(target: Target, processes: int, sizes: Sizes) -> RunsResult:
    target.flush()
    backend = Backend.connect(target.url)
    store = web_store(backend)
    try:
        threads = [(await commands.create_thread(store))[0] for _ in range(sizes.runs)]
        env = {"SLIPSTREAM_SCRIPTED_DELAY_MS": "0", "SLIPSTREAM_SCRIPTED_WORDS": str(WORDS)}
        with workers(target.url, processes, **env):
            await registered(store, processes)
            # As many sends at once as web requests might make, well inside the pool
            # (a send waiting on a full pool for a second fails).
            senders = asyncio.Semaphore(SENDS_AT_ONCE)
            completions = Completions(store)
            await completions.start()
            target.reset_stats()
            began = time.perf_counter()
            waiting = asyncio.create_task(
                completions.wait(sizes.runs, within_s=sizes.runs_within_s())
            )
            await asyncio.gather(*(send(store, t, senders) for t in threads))
            completed = await waiting
            took = time.perf_counter() - began
            calls, micros = target.command_stats()
        finished = completed >= sizes.runs
        return RunsResult(
            rate=sizes.runs / took if finished else None,
            completed=completed,
            runs=sizes.runs,
            seconds=took,
            commands=(calls - completions.reads) / sizes.runs,
            micros=micros / sizes.runs,
            later_attempts=completions.later_attempts,
        )
    finally:
        await backend.close()


async def append_round(target: Target, sizes: Sizes) -> float:
    """Events/s appended by `sizes.appenders` processes at once."""
    target.flush()
    backend = Backend.connect(target.url)
    store = web_store(backend)
    try:
        threads = [(await commands.create_thread(store))[0] for _ in range(sizes.append_threads)]
    finally:
        await backend.close()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.appenders",
            target.url,
            str(PARTITIONS),
            str(sizes.append_s),
            str(sizes.append_tasks),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(sizes.appenders)
    ]
    try:
        for number, proc in enumerate(procs):
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(",".join(threads[number :: sizes.appenders]).encode() + b"\n")
            await proc.stdin.drain()
        for proc in procs:
            assert proc.stdout is not None
            ready = await asyncio.wait_for(proc.stdout.readline(), 60)
            if ready.strip() != b"ready":
                raise RuntimeError(f"an appender did not start: {ready!r}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        rate = 0.0
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), sizes.append_s + 60)
            result = orjson.loads(line)
            rate += result["events"] / result["seconds"]
        return rate
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            await proc.wait()


@dataclass
class Column:
    runs: dict[int, list[RunsResult]] = field(default_factory=lambda: {1: [], 2: []})
    appends: list[float] = field(default_factory=list)


def spread(values: Sequence[float], digits: int = 0) -> str:
    """median (min-max), or the one value."""
    if not values:
        return "-"
    fmt = f"{{:,.{digits}f}}"
    middle = fmt.format(statistics.median(values))
    if len(values) == 1:
        return middle
    return f"{middle} ({fmt.format(min(values))}\N{EN DASH}{fmt.format(max(values))})"


def runs_cell(results: list[RunsResult], pick: Callable[[RunsResult], float], digits: int) -> str:
    done = [pick(r) for r in results if r.rate is not None]
    unfinished = [r for r in results if r.rate is None]
    cell = spread(done, digits) if done else ""
    for r in unfinished:
        cell += f"{'; ' if cell else ''}unfinished: {r.completed}/{r.runs} in {r.seconds:.0f} s"
    return cell


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}"


def table(columns: dict[str, Column], sizes: Sizes, rows: list[str], version: str) -> str:
    names = list(columns)
    if sizes.quick:
        base = runs_cmd = append_cmd = "python -m bench.cluster --quick"
    else:
        base = f"python -m bench.cluster --rounds {sizes.rounds}"
        runs_cmd = f"{base} --runs {sizes.runs}"
        append_cmd = (
            f"{base} --append-s {sizes.append_s:g} --appenders {sizes.appenders} "
            f"--append-tasks {sizes.append_tasks}"
        )
    lines = [
        f"Redis {version}, {PARTITIONS} partitions, {machine()}, {date.today().isoformat()}; "
        f"median (min-max) over {sizes.rounds} round(s); load average at the end "
        f"{os.getloadavg()[0]:.1f}",
        "",
        f"| | {' | '.join(names)} | command |",
        f"|---|{'---|' * len(names)}---|",
    ]

    def row(label: str, cells: list[str], command: str) -> None:
        lines.append(f"| {label} | {' | '.join(cells)} | `{command}` |")

    for processes in (1, 2):
        if f"runs{processes}" not in rows:
            continue
        label = f"no-op runs/s, {processes} worker process{'es' if processes > 1 else ''}"
        row(
            label,
            [runs_cell(columns[n].runs[processes], lambda r: r.rate or 0.0, 0) for n in names],
            f"{runs_cmd} --rows runs{processes}",
        )
    if "append" in rows:
        label = (
            f"appended events/s ({sizes.appenders} processes x {sizes.append_tasks} appenders, "
            f"{sizes.append_threads} threads)"
        )
        row(
            label,
            [spread(columns[n].appends) for n in names],
            f"{append_cmd} --rows append",
        )
    if "runs1" in rows:
        row(
            "Redis commands per run (masters, 1 worker)",
            [runs_cell(columns[n].runs[1], lambda r: r.commands, 1) for n in names],
            f"{runs_cmd} --rows runs1",
        )
        row(
            "Redis server µs per run (masters, 1 worker)",
            [runs_cell(columns[n].runs[1], lambda r: r.micros, 0) for n in names],
            f"{runs_cmd} --rows runs1",
        )
    return "\n".join(lines)


async def measure(targets: list[Target], sizes: Sizes, rows: list[str]) -> dict[str, Column]:
    columns = {target.name: Column() for target in targets}
    for number in range(sizes.rounds):
        # Alternate which goes first: what warms up or heats up is shared out evenly.
        order = targets if number % 2 == 0 else targets[::-1]
        for target in order:
            column = columns[target.name]
            for processes in (1, 2):
                if f"runs{processes}" in rows:
                    result = await runs_round(target, processes, sizes)
                    column.runs[processes].append(result)
                    print(
                        f"  round {number + 1} {target.name}: {processes} worker(s) "
                        + (
                            f"{result.rate:.0f} runs/s"
                            if result.rate is not None
                            else f"unfinished ({result.completed}/{result.runs})"
                        )
                        + f", {result.later_attempts} runs started again",
                        file=sys.stderr,
                    )
            if "append" in rows:
                rate = await append_round(target, sizes)
                column.appends.append(rate)
                print(
                    f"  round {number + 1} {target.name}: {rate:.0f} appended events/s",
                    file=sys.stderr,
                )
    return columns


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="slipstream-bench-cluster-"))
    started = Cluster(workdir)
    try:
        started.start(masters=3, replicas=1)
        yield started
    finally:
        started.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=400, help="runs per runs round")
    parser.add_argument("--append-s", type=float, default=3.0, help="seconds per append round")
    parser.add_argument("--appenders", type=int, default=3, help="appending processes")
    parser.add_argument("--append-tasks", type=int, default=16, help="coroutines per appender")
    parser.add_argument("--rows", default=",".join(ROWS), help="which of runs1,runs2,append")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    if args.quick:
        sizes = Sizes(True, rounds=1, runs=10, append_s=0.3, appenders=2, append_tasks=2)
    else:
        sizes = Sizes(
            False, args.rounds, args.runs, args.append_s, args.appenders, args.append_tasks
        )
    with redis_server() as single_url, cluster() as three:
        with redis.Redis.from_url(single_url) as client:
            version = str(client.info("server")["redis_version"])
        single_port = int(single_url.rsplit(":", 1)[1].split("/")[0])
        targets = [
            Target("single node", single_url, lambda: [single_port]),
            Target(
                "3-master cluster",
                three.url,
                lambda: [node.port for node in three.masters()],
            ),
        ]
        columns = await measure(targets, sizes, rows)
    print(table(columns, sizes, rows, version))


if __name__ == "__main__":
    asyncio.run(main())
