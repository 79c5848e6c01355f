"""Benchmark: Slipstream side by side with arq, BullMQ and DBOS, in one table.

    python -m bench.versus [--rounds 3] [--items 5000] [--workflows 1000] [--append-s 3]
        [--rows noop,workflows,append,live] [--systems slipstream,arq-default,arq-tuned,bullmq,dbos]
    python -m bench.versus --quick    # tiny sizes, one round: every row produced, in seconds

Starts its own redis-server (bench.live_latency.redis_server, loopback, no
persistence) and, for each system in turn, the same work in real processes.
The rounds alternate which system goes first, so what warms up or heats up
is shared out evenly; each cell is the median (min-max) over the rounds.

- No-op items: `--items` items are queued BEFORE any worker process starts,
  then 1 (and, in a second run, 2) worker processes start and the time runs
  from their spawn until every item is done. items/s is the items after the
  first over the time from the first item done to the last (each system's
  start-up is left out: "first item done", spawn to the first item done, is
  its own row); 2 workers ÷ 1 is taken
  within each round. Slipstream: one thread per item, one message to each
  through the web API's own command (service.commands, as bench.cluster and
  bench.runs do), real `python -m consumers` processes on the scripted model
  (a 20-word answer, no delay), no projector; an item is done at its
  run.completed on the partition feeds. arq (0.28): a job that does nothing,
  with arq's defaults (10 jobs at once, a poll every 0.5 s) and tuned
  (max_jobs=50, poll_delay=0.01), done once its result is stored. BullMQ: a
  processor that does nothing, concurrency 50, done once in the completed set.
  The peers' workers say on stdout when their jobs finish (bench/peers/), so
  watching them adds nothing to Redis; Slipstream's completions are read off
  the feeds, and those reads are taken out of the command count.
- Redis per item, 1 worker: INFO commandstats from just before the items are
  queued until all are done (CONFIG RESETSTAT; INFO and CONFIG left out): all
  commands (a script's own commands included, as commandstats counts them),
  the script calls among them (EVALSHA, EVAL, FCALL), and the microseconds
  commandstats gives them (a script's or EXEC's time holds the time of the
  commands it ran, which are counted again under their own names: summed
  this way it overstates server time for scripts and transactions). The
  server's own CPU time (INFO cpu, main thread, the same span) says what
  Redis actually spent, commands, parsing and socket I/O together.
- Client round trips per Slipstream run: each worker process is given its own
  SLIPSTREAM_ROUNDTRIPS_FILE, which it writes at exit ({"round_trips",
  "runs"}); "not measured" where the worker does not write it.
- Workflow steps: `--workflows` workflows of 4 no-op steps (bench.noop_workflows'
  noop4; bench/peers/dbos_steps.py the same for DBOS) on 2 worker processes
  already running; steps journaled per second from the first message (enqueue)
  to the last workflow done, as bench.workflow_steps measures. DBOS runs on the
  PostgreSQL named by SLIPSTREAM_BENCH_PG (its dbos tables emptied each
  round), on a queue with DBOS's default settings; without it the row says
  skipped.
- Append path: one process (bench.appenders) with 16 coroutines, each
  appending one answer delta per call through the store's append script,
  against the same process writing the same entries to the same thread
  streams with plain XADDs, 16 to a pipeline (as many in flight).
- Live: every row `python -m bench.live_latency --json` prints.

Peers are never Slipstream's dependencies: arq and DBOS live in a venv of
their own (.venv/peers, which `make bench` makes from bench/peers/requirements.txt:
arq pins redis-py below 6, Slipstream runs on 8), BullMQ in bench/peers/bullmq
(npm ci). A missing one is a row saying so, not a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import orjson
import redis

from bench.cluster import SENDS_AT_ONCE, machine, registered, send, spread, web_store
from bench.feeds import feed_ends
from bench.live_latency import ROOT, redis_server
from bench.runs import PARTITIONS, workers
from bench.workflow_steps import round_of
from service import commands
from slipstream.backend import Backend
from slipstream.store import EventStore

WORDS = 20  # a short scripted answer: a no-op run
NOOP_SYSTEMS = ("slipstream", "arq-default", "arq-tuned", "bullmq")
SYSTEMS = (*NOOP_SYSTEMS, "dbos")
ROWS = ("noop", "workflows", "append", "live")
NAMES = {
    "slipstream": "Slipstream",
    "arq-default": "arq, defaults",
    "arq-tuned": "arq, max_jobs=50, poll_delay=0.01",
    "bullmq": "BullMQ, concurrency 50",
    "dbos": "DBOS, default queue",
}
SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
NOT_ITEM_COMMANDS = frozenset({"info", "config"})  # this process's own
APPEND_TASKS = 16
# Spelled by name: ruff flags the characters themselves as confusable.
GE = "\N{GREATER-THAN OR EQUAL TO}"
LE = "\N{LESS-THAN OR EQUAL TO}"
TIMES = "\N{MULTIPLICATION SIGN}"
BULLMQ = ROOT / "bench" / "peers" / "bullmq"


def peers_python() -> Path:
    """The peers' venv: beside the running venv (`make bench` makes .venv/peers)."""
    chosen = os.environ.get("SLIPSTREAM_BENCH_PEERS_PYTHON")
    return Path(chosen) if chosen else Path(sys.prefix) / "peers" / "bin" / "python"


@dataclass(frozen=True)
class Sizes:
    quick: bool
    rounds: int
    items: int
    workflows: int
    append_s: float

    def noop_within_s(self) -> float:
        """How long a no-op round may take before it is reported as unfinished."""
        return 30 + self.items / 25


# --- the peers: what is there, what it is -----------------------------------------------


def peer_versions() -> dict[str, str]:
    """Installed versions of arq and DBOS in the peers' venv (none if it is missing)."""
    python = peers_python()
    if not python.exists():
        return {}
    script = (
        "import importlib.metadata as m, json\n"
        "found = {}\n"
        "for name in ('arq', 'dbos'):\n"
        "    try: found[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(found))\n"
    )
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=60)
    return dict(orjson.loads(done.stdout)) if done.returncode == 0 else {}


def bullmq_version() -> str | None:
    package = BULLMQ / "node_modules" / "bullmq" / "package.json"
    return str(orjson.loads(package.read_bytes())["version"]) if package.exists() else None


def node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    return subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()


@dataclass
class Peers:
    """Which peers can run here, and why not for those that cannot."""

    versions: dict[str, str]
    bullmq: str | None
    node: str | None
    pg_url: str | None

    @classmethod
    def find(cls) -> Peers:
        return cls(
            peer_versions(),
            bullmq_version(),
            node_version(),
            os.environ.get("SLIPSTREAM_BENCH_PG") or None,
        )

    def missing(self, system: str) -> str | None:
        """Why `system` cannot run here; None when it can."""
        venv = "make bench installs it in .venv/peers"
        if system.startswith("arq") and "arq" not in self.versions:
            return f"skipped (arq not installed: {venv})"
        if system == "bullmq":
            if self.node is None:
                return "skipped (node not found)"
            if self.bullmq is None:
                return "skipped (BullMQ not installed: npm ci in bench/peers/bullmq)"
        if system == "dbos":
            if self.pg_url is None:
                return "skipped (SLIPSTREAM_BENCH_PG unset)"
            if "dbos" not in self.versions:
                return f"skipped (dbos not installed: {venv})"
        return None


# --- Redis's own counts --------------------------------------------------------------------


@dataclass(frozen=True)
class RedisCost:
    """Per item, from INFO between `RedisStats.begin` and `end`."""

    commands: float
    scripts: float
    micros: float  # commandstats' usec, summed
    cpu_micros: float  # the main thread's CPU time


class RedisStats:
    def __init__(self, url: str) -> None:
        self.url = url
        self._cpu = 0.0

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=10)

    @staticmethod
    def _cpu_s(client: redis.Redis) -> float:
        info = client.info("cpu")
        return float(info["used_cpu_sys_main_thread"]) + float(info["used_cpu_user_main_thread"])

    def flush(self) -> None:
        with self._client() as client:
            client.flushall()

    def begin(self) -> None:
        with self._client() as client:
            client.config_resetstat()
            self._cpu = self._cpu_s(client)

    def end(self, items: int, own_reads: int = 0) -> RedisCost:
        """Per item; `own_reads`: XREADs this process made to watch, not the system's."""
        calls = scripts = micros = 0
        with self._client() as client:
            cpu = self._cpu_s(client) - self._cpu
            for name, stat in client.info("commandstats").items():
                command = name.removeprefix("cmdstat_").split("|")[0]
                if command in NOT_ITEM_COMMANDS:
                    continue
                calls += int(stat["calls"])
                micros += int(stat["usec"])
                if command in SCRIPT_COMMANDS:
                    scripts += int(stat["calls"])
        return RedisCost(
            commands=(calls - own_reads) / items,
            scripts=scripts / items,
            micros=micros / items,
            cpu_micros=cpu * 1e6 / items,
        )


# --- no-op items ------------------------------------------------------------------------------


@dataclass
class NoopResult:
    items: int
    done: int
    seconds: float  # spawn to the last item done (or to giving up)
    first_s: float | None  # spawn to the first item done
    cost: RedisCost
    round_trips: float | None = None  # per run (Slipstream)
    exited: list[int] = field(default_factory=list)  # exit codes of workers that died early

    @property
    def rate(self) -> float | None:
        """Items per second once working: from the first item done to the last (start-up
        is the "first item done" row's); None when the round did not finish."""
        if self.done < self.items:
            return None
        if self.first_s is None or self.items < 2 or self.seconds <= self.first_s:
            return self.items / self.seconds
        return (self.items - 1) / (self.seconds - self.first_s)

    def unfinished(self) -> str:
        died = f", a worker exited with code {self.exited[0]}" if self.exited else ""
        return f"unfinished: {self.done:,}/{self.items:,} in {self.seconds:.0f} s{died}"

    def summary(self) -> str:
        rate = f"{self.rate:,.0f} items/s" if self.rate else self.unfinished()
        first = "-" if self.first_s is None else f"{self.first_s * 1000:,.0f} ms"
        return f"{rate}, first done after {first}, {self.seconds:.1f} s"


class FeedWatch:
    """Counts run.completed on every partition feed (one XREAD for all: one Redis)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.reads = 0
        self.done = 0
        self.first: float | None = None
        self.last: float | None = None
        self._feeds: dict[str, str] = {}

    async def start(self) -> None:
        self._feeds = await feed_ends(self.store)

    async def wait(self, target: int, within_s: float, alive: Callable[[], bool]) -> None:
        """Until `target` runs completed, `within_s` passed or `alive()` turns false."""
        reader = self.store.backend.reader()
        deadline = time.monotonic() + within_s
        try:
            while self.done < target and time.monotonic() < deadline and alive():
                reply = await self.store.backend.xread(
                    reader, self._feeds, count=5000, block_ms=1000
                )
                self.reads += 1
                now = time.monotonic()
                for feed, entries in reply:
                    self._feeds[feed] = entries[-1][0]
                    for _, fields in entries:
                        if fields.get("type") == "run.completed":
                            self.done += 1
                            self.first = self.first or now
                            self.last = now
        finally:
            await self.store.backend.release(reader)


def read_round_trips(paths: Sequence[Path]) -> float | None:
    """Round trips per run over the worker processes' files; None if none wrote one."""
    trips = runs = 0
    for path in paths:
        if not path.exists():
            return None
        written = orjson.loads(path.read_bytes())
        trips += int(written["round_trips"])
        runs += int(written["runs"])
    return trips / runs if runs else None


async def slipstream_round(
    url: str, processes: int, sizes: Sizes, stats: RedisStats, tmp: Path
) -> NoopResult:
    stats.flush()
    backend = Backend.connect(url)
    store = web_store(backend)
    senders = asyncio.Semaphore(SENDS_AT_ONCE)

    async def create() -> str:
        async with senders:
            return (await commands.create_thread(store))[0]

    try:
        threads = await asyncio.gather(*(create() for _ in range(sizes.items)))
        watch = FeedWatch(store)
        await watch.start()
        stats.begin()
        await asyncio.gather(*(send(store, t, senders) for t in threads))
        files = [tmp / f"round-trips-{processes}-{number}.json" for number in range(processes)]
        for path in files:
            path.unlink(missing_ok=True)
        env = {"SLIPSTREAM_SCRIPTED_DELAY_MS": "0", "SLIPSTREAM_SCRIPTED_WORDS": str(WORDS)}
        with contextlib.ExitStack() as started:
            spawned = time.monotonic()
            procs: list[subprocess.Popen[bytes]] = []
            for path in files:  # one at a time: each its own file
                procs += started.enter_context(
                    workers(url, 1, **env, SLIPSTREAM_ROUNDTRIPS_FILE=str(path))
                )
            # A worker that dies (it cannot start, say) ends the round: none would finish it.
            await watch.wait(
                sizes.items, sizes.noop_within_s(), lambda: all(p.poll() is None for p in procs)
            )
            exited = [code for p in procs if (code := p.poll()) is not None]
            ended = watch.last if watch.done >= sizes.items else time.monotonic()
            cost = stats.end(sizes.items, own_reads=watch.reads)
        return NoopResult(
            items=sizes.items,
            done=watch.done,
            seconds=(ended or time.monotonic()) - spawned,
            first_s=None if watch.first is None else watch.first - spawned,
            cost=cost,
            round_trips=read_round_trips(files),  # written as the workers exited
            exited=exited,
        )
    finally:
        await backend.close()


def peer_commands(system: str, url: str, items: int) -> tuple[list[str], list[str], Path]:
    """(enqueue command, worker command, their folder) for a no-op peer."""
    if system == "bullmq":
        node = shutil.which("node") or "node"
        return [node, "enqueue.mjs", url, str(items)], [node, "worker.mjs", url], BULLMQ
    python = str(peers_python())
    module = [python, "-m", "bench.peers.arq_noop"]
    settings = system.removeprefix("arq-")
    return [*module, "enqueue", url, str(items)], [*module, "work", url, settings], ROOT


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 20)
    except TimeoutError:
        process.kill()
        await process.wait()


async def peer_round(
    system: str, url: str, processes: int, sizes: Sizes, stats: RedisStats
) -> NoopResult:
    stats.flush()
    enqueue, work, folder = peer_commands(system, url, sizes.items)
    stats.begin()
    queued = await asyncio.create_subprocess_exec(*enqueue, cwd=folder)
    if await asyncio.wait_for(queued.wait(), 120) != 0:
        raise RuntimeError(f"{system}: queueing the items failed ({' '.join(enqueue)})")
    spawned = time.monotonic()
    started = [
        await asyncio.create_subprocess_exec(*work, cwd=folder, stdout=asyncio.subprocess.PIPE)
        for _ in range(processes)
    ]
    latest: list[dict[str, float]] = [{"done": 0} for _ in started]
    all_done = asyncio.Event()

    async def follow(number: int, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            latest[number] = orjson.loads(line)
            if sum(report["done"] for report in latest) >= sizes.items:
                all_done.set()

    followers = [asyncio.create_task(follow(n, p)) for n, p in enumerate(started)]
    finished = asyncio.create_task(all_done.wait())
    try:
        # Until all are done, time is up, or a worker exits (its stdout ends): then
        # none would finish them.
        await asyncio.wait(
            [finished, *followers],
            timeout=sizes.noop_within_s(),
            return_when=asyncio.FIRST_COMPLETED,
        )
        died = [p for p, follower in zip(started, followers, strict=True) if follower.done()]
        cost = stats.end(sizes.items)
    finally:
        finished.cancel()
        await asyncio.gather(*(stop(process) for process in started))
        await asyncio.gather(finished, *followers, return_exceptions=True)
    exited = [p.returncode for p in died if p.returncode is not None]  # theirs, not our stop's
    done = int(sum(report["done"] for report in latest))
    firsts = [report["first"] for report in latest if report.get("first")]
    lasts = [report["last"] for report in latest if report.get("last")]
    ended = max(lasts) if done >= sizes.items else time.monotonic()
    return NoopResult(
        items=sizes.items,
        done=done,
        seconds=ended - spawned,
        first_s=min(firsts) - spawned if firsts else None,
        cost=cost,
        exited=exited,
    )


# --- workflow steps ---------------------------------------------------------------------------


async def slipstream_steps(url: str, sizes: Sizes, stats: RedisStats) -> float:
    """Journaled no-op steps/s, 2 worker processes already running."""
    stats.flush()
    backend = Backend.connect(url)
    store = web_store(backend)
    try:
        with workers(url, 2, SLIPSTREAM_WORKFLOWS="bench.noop_workflows"):
            await registered(store, 2)
            elapsed, journaled = await round_of(store, "noop4", sizes.workflows, 4)
        return journaled / elapsed
    finally:
        await backend.close()


async def dbos_steps(pg_url: str, sizes: Sizes) -> float:
    """The same on DBOS: 2 worker processes launched, then the workflows enqueued."""
    module = [str(peers_python()), "-m", "bench.peers.dbos_steps"]
    started = [
        await asyncio.create_subprocess_exec(
            *module,
            "worker",
            pg_url,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for process in started:
            assert process.stdout is not None
            ready = await asyncio.wait_for(process.stdout.readline(), 120)
            if ready.strip() != b"ready":
                raise RuntimeError(f"a DBOS worker did not start: {ready!r}")
        run = await asyncio.create_subprocess_exec(
            *module, "run", pg_url, str(sizes.workflows), cwd=ROOT, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(run.communicate(), 60 + sizes.workflows / 2)
        if run.returncode != 0:
            raise RuntimeError(f"the DBOS run failed (exit {run.returncode})")
        result = orjson.loads(out)
        if result["steps"] != 4 * sizes.workflows:
            raise RuntimeError(f"DBOS journaled {result['steps']} steps, not {4 * sizes.workflows}")
        return float(result["steps"]) / float(result["seconds"])
    finally:
        for process in started:
            if process.stdin is not None:
                process.stdin.close()  # the worker's cue to shut DBOS down
        for process in started:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                await stop(process)


# --- the append path ----------------------------------------------------------------------------


async def append_rate(url: str, sizes: Sizes, stats: RedisStats, plain: bool) -> float:
    """Events/s one bench.appenders process writes: through the script, or plain XADDs."""
    stats.flush()
    backend = Backend.connect(url)
    store = web_store(backend)
    try:
        threads = [(await commands.create_thread(store))[0] for _ in range(2 * APPEND_TASKS)]
    finally:
        await backend.close()
    args = [url, str(PARTITIONS), str(sizes.append_s), str(APPEND_TASKS)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.appenders",
        *args,
        *(["xadd"] if plain else []),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(",".join(threads).encode() + b"\n")
        await process.stdin.drain()
        ready = await asyncio.wait_for(process.stdout.readline(), 60)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the appender did not start: {ready!r}")
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        result = orjson.loads(
            await asyncio.wait_for(process.stdout.readline(), sizes.append_s + 60)
        )
        return float(result["events"]) / float(result["seconds"])
    finally:
        await stop(process)


# --- live rows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveRow:
    name: str
    unit: str
    median: float
    p99: float
    command: str


async def live_rows(quick: bool) -> tuple[list[LiveRow], str | None]:
    """bench.live_latency's rows, or why there are none."""
    args = [sys.executable, "-m", "bench.live_latency", "--json", *(["--quick"] if quick else [])]
    process = await asyncio.create_subprocess_exec(
        *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 900)
    sys.stderr.write(err.decode(errors="replace"))  # its tables and progress
    if process.returncode != 0:
        if b"unrecognized arguments" in err:
            return [], "unavailable (bench.live_latency --json missing)"
        lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
        return [], f"failed (exit {process.returncode}: {lines[-1][:120]})"
    rows = [LiveRow(**row) for row in orjson.loads(out)["rows"]]
    return rows, None


# --- the table --------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Measured:
    """Everything the rounds gave, by system."""

    noop: dict[str, dict[int, list[NoopResult]]] = field(default_factory=dict)
    steps: dict[str, list[float]] = field(default_factory=dict)
    appends: dict[str, list[float]] = field(default_factory=lambda: {"script": [], "xadd": []})
    live: list[LiveRow] = field(default_factory=list)
    live_note: str | None = None

    def rates(self, system: str, processes: int) -> list[float]:
        results = self.noop.get(system, {}).get(processes, [])
        return [r.rate for r in results if r.rate is not None]

    def scaling(self, system: str) -> list[float]:
        """2 workers ÷ 1 within each round where both finished."""
        pairs = zip(
            self.noop.get(system, {}).get(1, []), self.noop.get(system, {}).get(2, []), strict=False
        )
        return [two.rate / one.rate for one, two in pairs if one.rate and two.rate]


@dataclass(frozen=True)
class Row:
    measure: str
    system: str
    value: str
    target: str = ""
    met: str = ""
    command: str = ""


def verdict(ok: bool, figure: str) -> str:
    return f"{'yes' if ok else 'no'}: {figure}"


def ratio_verdict(mine: float | None, theirs: float | None, at_least: float, name: str) -> str:
    """Whether `mine` is at least `at_least` times `theirs` (more than, when that is 1)."""
    if mine is None:
        return "not measured"
    if theirs is None:
        return f"not judged ({name} not measured)"
    ratio = mine / theirs
    ok = ratio > at_least if at_least == 1 else ratio >= at_least
    return verdict(ok, f"{ratio:.2f}\N{MULTIPLICATION SIGN} {name}")


def noop_rows(
    measured: Measured, systems: list[str], peers: Peers, command: Callable[[str], str]
) -> list[Row]:
    rows: list[Row] = []
    noop = measured.noop

    def unfinished(results: list[NoopResult]) -> str:
        return "; ".join(r.unfinished() for r in results if r.rate is None)

    def cell(
        system: str, pick: Callable[[NoopResult], float | None], digits: int, processes: int = 1
    ) -> str:
        if (reason := peers.missing(system)) is not None:
            return reason
        results = noop.get(system, {}).get(processes, [])
        values = [v for r in results if r.rate is not None and (v := pick(r)) is not None]
        text = spread(values, digits) if values else ""
        late = unfinished(results)
        return f"{text}; {late}" if text and late else text or late or "not measured"

    tuned = [median(measured.rates("arq-tuned", n)) for n in (1, 2)]
    bull2 = median(measured.rates("bullmq", 2))
    mine = [median(measured.rates("slipstream", n)) for n in (1, 2)]
    arq_name = "tuned arq"
    for processes in (1, 2):
        measure = f"no-op items/s, {processes} worker process{'es' if processes > 1 else ''}"
        for system in systems:
            target = met = ""
            if system == "slipstream":
                met = ratio_verdict(mine[processes - 1], tuned[processes - 1], 1, arq_name)
                target = f"> {arq_name}"
                if processes == 2:
                    target += ", \N{GREATER-THAN OR EQUAL TO} 0.5\N{MULTIPLICATION SIGN} BullMQ"
                    met += "; " + ratio_verdict(mine[1], bull2, 0.5, "BullMQ")
            value = cell(system, lambda r: r.rate, 0, processes)
            rows.append(Row(measure, NAMES[system], value, target, met, command(system)))
    for system in systems:
        values = measured.scaling(system)
        value = peers.missing(system) or (spread(values, 2) if values else "not measured")
        target = met = ""
        if system == "slipstream":
            target = "\N{GREATER-THAN OR EQUAL TO} 1.5"
            m = median(values)
            met = "not measured" if m is None else verdict(m >= 1.5, f"{m:.2f}")
        rows.append(
            Row(
                "2 workers \N{DIVISION SIGN} 1 worker",
                NAMES[system],
                value,
                target,
                met,
                command(system),
            )
        )
    for system in systems:
        target = met = ""
        firsts = [
            r.first_s * 1000 for r in noop.get(system, {}).get(1, []) if r.first_s is not None
        ]
        if system == "slipstream":
            target = "\N{LESS-THAN OR EQUAL TO} 300 ms"
            m = median(firsts)
            met = "not measured" if m is None else verdict(m <= 300, f"{m:,.0f} ms")
        value = peers.missing(system) or (spread(firsts, 0) if firsts else "not measured")
        rows.append(
            Row(
                "first item done after the worker process starts, ms (1 worker)",
                NAMES[system],
                value,
                target,
                met,
                command(system),
            )
        )
    per_item: list[tuple[str, Callable[[NoopResult], float | None], int, str, float | None]] = [
        ("Redis commands per item (1 worker)", lambda r: r.cost.commands, 1, "", None),
        (
            "script calls per item: EVALSHA, EVAL, FCALL (1 worker)",
            lambda r: r.cost.scripts,
            2,
            "",
            None,
        ),
        (
            "Redis µs per item in INFO commandstats, summed (1 worker)",
            lambda r: r.cost.micros,
            0,
            "",
            None,
        ),
        (
            "Redis server CPU µs per item, INFO cpu main thread (1 worker)",
            lambda r: r.cost.cpu_micros,
            0,
            "\N{LESS-THAN OR EQUAL TO} 150 µs",
            150,
        ),
    ]
    for measure, pick, digits, target_text, limit in per_item:
        for system in systems:
            target = met = ""
            if system == "slipstream" and limit is not None:
                target = target_text
                finished = [r for r in noop.get(system, {}).get(1, []) if r.rate is not None]
                values = [v for r in finished if (v := pick(r)) is not None]
                m = median(values)
                met = "not measured" if m is None else verdict(m <= limit, f"{m:,.0f} µs")
            rows.append(
                Row(
                    measure, NAMES[system], cell(system, pick, digits), target, met, command(system)
                )
            )
    if "slipstream" in systems:
        trips = [
            r.round_trips
            for r in noop.get("slipstream", {}).get(1, [])
            if r.round_trips is not None
        ]
        measured_any = bool(noop.get("slipstream", {}).get(1))
        if trips:
            value, m = spread(trips, 1), median(trips)
            met = verdict(m is not None and m <= 4, f"{m:.1f}")
        elif measured_any:
            value = "not measured: python -m consumers wrote no SLIPSTREAM_ROUNDTRIPS_FILE"
            met = "not measured"
        else:
            value = met = "not measured"
        rows.append(
            Row(
                "client round trips per run (1 worker)",
                NAMES["slipstream"],
                value,
                "\N{LESS-THAN OR EQUAL TO} 4",
                met,
                command("slipstream"),
            )
        )
    return rows


def workflow_rows(
    measured: Measured,
    systems: list[str],
    peers: Peers,
    sizes: Sizes,
    command: Callable[[str], str],
) -> list[Row]:
    measure = (
        f"workflow steps/s, {sizes.workflows:,} \N{MULTIPLICATION SIGN} 4 no-op steps, 2 workers"
    )
    rows = []
    mine = median(measured.steps.get("slipstream", []))
    dbos = median(measured.steps.get("dbos", []))
    for system in ("slipstream", "dbos"):
        if system not in systems:
            continue
        values = measured.steps.get(system, [])
        value = peers.missing(system) or (spread(values, 0) if values else "not measured")
        target = met = ""
        if system == "slipstream":
            target = f"{GE} 3,000, {GE} 15{TIMES} DBOS"
            met = "not measured" if mine is None else verdict(mine >= 3000, f"{mine:,.0f}")
            met += "; " + ratio_verdict(mine, dbos, 15, "DBOS")
        rows.append(Row(measure, NAMES[system], value, target, met, command(system)))
    return rows


def append_rows(measured: Measured, command: str) -> list[Row]:
    script, plain = measured.appends["script"], measured.appends["xadd"]
    measure = f"appended events/s, 1 process, {APPEND_TASKS} at a time"
    ratios = [s / x for s, x in zip(script, plain, strict=False) if x]
    m = median(ratios)
    return [
        Row(measure, "Slipstream's append script", spread(script), command=command),
        Row(measure, f"plain XADD, {APPEND_TASKS} to a pipeline", spread(plain), command=command),
        Row(
            "append script \N{DIVISION SIGN} plain XADD",
            "Slipstream",
            spread(ratios, 2) if ratios else "not measured",
            "\N{GREATER-THAN OR EQUAL TO} 0.5",
            "not measured" if m is None else verdict(m >= 0.5, f"{m:.2f}"),
            command,
        ),
    ]


def figure(value: float) -> str:
    """Three significant digits, whole numbers from 100 on."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def live_target(name: str) -> tuple[str, Callable[[LiveRow], bool] | None]:
    """The issue's live targets, matched to bench.live_latency's rows by their names."""
    text = name.lower().replace(",", "")
    if "bytes" in text:
        return f"{LE} 1.5{TIMES} the text", lambda r: r.median <= 1.5
    if re.search(r"\b1000 watchers\b", text):
        return f"p99 {LE} 100 ms", lambda r: r.p99 <= 100
    if re.search(r"\b500 answers\b", text):
        return f"p99 {LE} 50 ms", lambda r: r.p99 <= 50
    if re.search(r"\b100 answers\b", text):
        return f"median {LE} 2 ms, p99 {LE} 15 ms", lambda r: r.median <= 2 and r.p99 <= 15
    return "", None


def live_table_rows(measured: Measured, command: str) -> list[Row]:
    if measured.live_note is not None:
        return [Row("live latency", "Slipstream", measured.live_note, command=command)]
    rows = []
    for live in measured.live:
        unit = f" {live.unit}"
        if live.median == live.p99:  # a count or a ratio: one figure
            value = f"{figure(live.median)}{unit}"
        else:
            value = f"median {figure(live.median)}{unit}, p99 {figure(live.p99)}{unit}"
        target, check = live_target(live.name)
        met = "" if check is None else verdict(check(live), value)
        rows.append(Row(live.name, "Slipstream", value, target, met, live.command))
    return rows


def render(rows: list[Row]) -> list[str]:
    lines = [
        "| measure | system | median (min\N{EN DASH}max) | target | met | command |",
        "|---|---|---|---|---|---|",
    ]
    last = None
    for row in rows:
        measure = row.measure if row.measure != last else ""  # one label per group
        last = row.measure
        cells = [
            measure,
            row.system,
            row.value,
            row.target,
            row.met,
            f"`{row.command}`" if row.command else "",
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return lines


def header(sizes: Sizes, peers: Peers, redis_version: str, load_start: float) -> list[str]:
    versions = [
        f"Python {platform.python_version()}",
        f"Node {peers.node}" if peers.node else "no Node",
        f"arq {peers.versions['arq']}" if "arq" in peers.versions else "no arq",
        f"BullMQ {peers.bullmq}" if peers.bullmq else "no BullMQ",
        f"DBOS {peers.versions['dbos']}" if "dbos" in peers.versions else "no DBOS",
    ]
    how = (
        f"{sizes.items:,} no-op items queued before the worker processes start; "
        f"median (min\N{EN DASH}max) over {sizes.rounds} round(s), alternating which system "
        f"goes first; load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    return [
        f"bench.versus, {date.today().isoformat()}: {machine()}",
        f"Redis {redis_version} (loopback, no persistence); {', '.join(versions)}",
        how + (" (--quick: sizes too small to read anything into)" if sizes.quick else ""),
        "",
    ]


# --- running it ---------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


async def measure(
    url: str, sizes: Sizes, rows: list[str], systems: list[str], peers: Peers
) -> Measured:
    measured = Measured()
    stats = RedisStats(url)
    runnable = [s for s in systems if peers.missing(s) is None]
    noop_systems = [s for s in runnable if s in NOOP_SYSTEMS]
    with tempfile.TemporaryDirectory(prefix="slipstream-versus-") as tmp:
        for number in range(sizes.rounds):
            # Alternate which goes first: what warms up or heats up is shared out evenly.
            flip = number % 2 == 1
            if "noop" in rows:
                for system in noop_systems[::-1] if flip else noop_systems:
                    for processes in (1, 2):
                        began = time.monotonic()
                        if system == "slipstream":
                            result = await slipstream_round(url, processes, sizes, stats, Path(tmp))
                        else:
                            result = await peer_round(system, url, processes, sizes, stats)
                        measured.noop.setdefault(system, {}).setdefault(processes, []).append(
                            result
                        )
                        took = time.monotonic() - began
                        log(
                            f"round {number + 1} {system} x{processes}: {result.summary()} "
                            f"({took:.0f} s with the queueing)"
                        )
            if "workflows" in rows:
                order = [s for s in ("slipstream", "dbos") if s in runnable]
                for system in order[::-1] if flip else order:
                    if system == "slipstream":
                        rate = await slipstream_steps(url, sizes, stats)
                    else:
                        assert peers.pg_url is not None
                        rate = await dbos_steps(peers.pg_url, sizes)
                    measured.steps.setdefault(system, []).append(rate)
                    log(f"round {number + 1} {system}: {rate:,.0f} workflow steps/s")
            if "append" in rows:
                for plain in (True, False) if flip else (False, True):
                    rate = await append_rate(url, sizes, stats, plain)
                    measured.appends["xadd" if plain else "script"].append(rate)
                    what = "plain XADD" if plain else "append script"
                    log(f"round {number + 1} {what}: {rate:,.0f} events/s")
    return measured


def parse(argv: Sequence[str] | None = None) -> tuple[Sizes, list[str], list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=5000, help="no-op items per round")
    parser.add_argument("--workflows", type=int, default=1000, help="4-step workflows per round")
    parser.add_argument("--append-s", type=float, default=2.0, help="seconds per append round")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which of {','.join(ROWS)}")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"which of {','.join(SYSTEMS)}"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    systems = [s for s in args.systems.split(",") if s]
    for chosen, known, what in ((rows, ROWS, "rows"), (systems, SYSTEMS, "systems")):
        if unknown := sorted(set(chosen) - set(known)):
            parser.error(f"unknown {what} {unknown}; known: {', '.join(known)}")
    if args.quick:
        sizes = Sizes(True, rounds=1, items=200, workflows=50, append_s=0.3)
    else:
        sizes = Sizes(False, args.rounds, args.items, args.workflows, args.append_s)
    return sizes, rows, systems


def commands_for(sizes: Sizes) -> tuple[Callable[[str], str], Callable[[str], str], str, str]:
    """The command that measures each row alone: no-op, workflow, append and live rows."""
    base = "python -m bench.versus" + (" --quick" if sizes.quick else f" --rounds {sizes.rounds}")
    items = "" if sizes.quick else f" --items {sizes.items}"
    workflows = "" if sizes.quick else f" --workflows {sizes.workflows}"
    append = "" if sizes.quick else f" --append-s {sizes.append_s:g}"
    return (
        lambda system: f"{base}{items} --rows noop --systems {system}",
        lambda system: (
            ("SLIPSTREAM_BENCH_PG=<url> " if system == "dbos" else "")
            + f"{base}{workflows} --rows workflows --systems {system}"
        ),
        f"{base}{append} --rows append",
        f"{base} --rows live",
    )


async def main() -> None:
    sizes, rows, systems = parse()
    load_start = os.getloadavg()[0]
    peers = Peers.find()
    for system in systems:
        if (reason := peers.missing(system)) is not None:
            log(f"{system}: {reason}")
    began = time.monotonic()
    with redis_server() as url:
        with redis.Redis.from_url(url) as client:
            version = str(client.info("server")["redis_version"])
        measured = await measure(url, sizes, rows, systems, peers)
    if "live" in rows:
        live_began = time.monotonic()
        measured.live, measured.live_note = await live_rows(sizes.quick)
        log(f"bench.live_latency took {time.monotonic() - live_began:.0f} s")
    noop_command, steps_command, append_command, live_command = commands_for(sizes)
    table: list[Row] = []
    if "noop" in rows:
        table += noop_rows(measured, [s for s in systems if s in NOOP_SYSTEMS], peers, noop_command)
    if "workflows" in rows:
        table += workflow_rows(measured, systems, peers, sizes, steps_command)
    if "append" in rows:
        table += append_rows(measured, append_command)
    if "live" in rows:
        table += live_table_rows(measured, live_command)
    print("\n".join([*header(sizes, peers, version, load_start), *render(table)]))
    log(f"bench.versus took {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
