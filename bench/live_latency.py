"""Benchmark: delta append -> websocket arrival, watcher bytes, and entries per 100 words.

    python -m bench.live_latency [--quick] [--json] [--answers 1,10,100,500]
        [--watchers 2] [--fanout 1000] [--deltas 40] [--interval-ms 50] [--rounds 3]
        [--source CHECKOUT] [--profile-web FILE]

Starts its own redis-server, a `python -m service` web process and a
`python -m projections` projector (as a deployment runs them; `--no-projector`
leaves it out) on free loopback ports. This process plays the worker: it
appends deltas through the real append script, and a separate process
(bench.watchers) holds the websockets and stamps each delta frame as it comes
off the socket; both read CLOCK_MONOTONIC, so there is no skew.

Scenarios, each a row (median and p99 are the medians over `--rounds` rounds,
which alternate between the scenarios):
- N answers streaming at once, W watchers on each thread (`--answers`,
  `--watchers`): each answer appends one delta per `--interval-ms` (50: the
  worker's flush window, SLIPSTREAM_FLUSH_MS, so the fastest a real answer's
  deltas come), the answers' starts spread over one interval as independent
  answers' are. Latency per watcher and delta, from just before the append
  call to the frame's arrival. Beside it, the CPU each process spent per delta
  appended (this writer, Redis, the projector) or per frame delivered (the web
  process, the watchers), from /proc: steadier than latency on a shared machine.
- One thread with `--fanout` watchers, one delta per interval.
- Watcher bytes ÷ text: the real worker answers on the scripted model at
  `--model-ms-per-word` (20: ~50 words/s, a hosted model's pace) with the
  default flush window; a watcher counts the bytes its delta frames carry on
  the wire (frame header and payload) against the bytes of their text, with
  permessage-deflate negotiated as browsers do, and without it.
- Entries an answer writes per 100 words at several model speeds (the real
  worker on the scripted model).

`--source` runs the web process and the projector from another checkout (an
earlier commit's, from `git worktree add`), so an earlier live path is timed the
same way. `--json` prints only {"rows": [{name, unit, median, p99, command}, ...]} on
stdout (bytes rows: unit "\N{MULTIPLICATION SIGN} text", the ratio in median and p99; counts: the
same figure in both); the tables go to stderr then. `--quick` runs tiny sizes
for a smoke test: every row, in seconds, nothing to read into the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import httpx
import orjson
import redis

from consumers.llm.demo_reply import demo_reply
from consumers.llm.scripted import ScriptedLLM, chunks
from consumers.worker import Worker
from service import commands
from service.embedded import free_port
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace, new_id, new_run_id
from slipstream.store import Append, EventStore

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = "16"
# Spelled by name: ruff flags the characters themselves as confusable.
TIMES = "\N{MULTIPLICATION SIGN}"
TEXT_RATIO = f"{TIMES} text"
WORDS_PER_DELTA = 3
"""Words of the latency rounds' deltas: a 50 ms window of a model at ~60 words/s."""


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
        CHILDREN["redis"] = process.pid
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def web_process(
    redis_url: str,
    extra_env: dict[str, str] | None = None,
    *,
    source: Path = ROOT,
    profile: str | None = None,
) -> Iterator[int]:
    """A `python -m service` process, its code from `source` (another checkout, to time
    an earlier live path the same way), run under cProfile into `profile` if given."""
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "SLIPSTREAM_LOG_LEVEL": "WARNING",
        "SLIPSTREAM_PARTITIONS": PARTITIONS,  # this process's keyspace, whatever the caller's
        **(extra_env or {}),
    }
    profiling = ["-m", "cProfile", "-o", profile] if profile else []
    # Its stdout goes to ours for errors: `--json` keeps stdout for the rows.
    process = subprocess.Popen(
        [sys.executable, *profiling, "-m", "service"], cwd=source, env=env, stdout=sys.stderr
    )
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
        CHILDREN["web"] = process.pid
        yield port
    finally:
        process.terminate()
        process.wait()


@contextmanager
def projector_process(redis_url: str, *, source: Path = ROOT) -> Iterator[None]:
    """A `python -m projections` process, as a deployment runs beside its web processes."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SLIPSTREAM_LOG_LEVEL": "WARNING",
        "SLIPSTREAM_PARTITIONS": PARTITIONS,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "projections"], cwd=source, env=env, stdout=sys.stderr
    )
    try:
        CHILDREN["projector"] = process.pid
        yield
    finally:
        process.terminate()
        process.wait()


CHILDREN: dict[str, int] = {}
"""The pids of the processes this bench started, by role, for their CPU time."""
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) so far of this process (the writer) and each child.

    From /proc: a child missing there (not Linux) is left out.
    """
    used = {"writer": time.process_time()}
    for role, pid in CHILDREN.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[role] = (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime
    return used


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    """One figure of the table: a (median, p99) per round."""

    name: str
    unit: str
    rounds: list[tuple[float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(m for m, _ in self.rounds)

    @property
    def p99(self) -> float:
        return statistics.median(p for _, p in self.rounds)

    def spread(self) -> str:
        if len(self.rounds) < 2:
            return ""
        medians = [m for m, _ in self.rounds]
        p99s = [p for _, p in self.rounds]
        return (
            f"median {min(medians):.2f} to {max(medians):.2f}, "
            f"p99 {min(p99s):.2f} to {max(p99s):.2f}"
        )


@dataclass
class Watched:
    """What a bench.watchers process reports (see its docstring)."""

    arrivals: dict[str, dict[str, list[float]]]
    frame_bytes: int
    text_bytes: int
    frames: int
    closed: list[str]
    cpu: float


async def watch(
    port: int,
    threads: list[str],
    watchers: int,
    *,
    deltas: int = 0,
    until: str = "",
    deflate: bool = True,
    wait_s: float = 60,
) -> tuple[asyncio.subprocess.Process, asyncio.Future[Watched]]:
    """Start a bench.watchers process and wait until its sockets have their snapshots.

    Returns the process and a future of its report (when every socket has seen
    `deltas` deltas, or the event `until`).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.watchers",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=256 * 1024 * 1024,  # the arrivals come back as one JSON line
    )
    assert process.stdin is not None and process.stdout is not None
    spec = {
        "port": port,
        "threads": threads,
        "watchers": watchers,
        "deltas": deltas,
        "until": until,
        "deflate": deflate,
        "timeout": wait_s,
    }
    process.stdin.write(orjson.dumps(spec) + b"\n")
    await process.stdin.drain()
    process.stdin.close()
    ready = await asyncio.wait_for(process.stdout.readline(), 120)
    if ready.strip() != b"ready":
        await process.wait()
        raise RuntimeError(f"bench.watchers did not get ready: {ready!r}")
    stdout = process.stdout

    async def report() -> Watched:
        line = await asyncio.wait_for(stdout.readline(), wait_s + 30)
        await process.wait()
        return Watched(**orjson.loads(line))

    return process, asyncio.ensure_future(report())


def delta_texts(count: int, tag: str) -> list[str]:
    """`count` chunks of an answer's text, WORDS_PER_DELTA words each."""
    words = chunks(demo_reply(f"live latency {tag}", count * WORDS_PER_DELTA))
    return ["".join(words[i : i + WORDS_PER_DELTA]) for i in range(0, len(words), WORDS_PER_DELTA)][
        :count
    ]


@dataclass
class Streamed:
    """One latency round: latencies (s, one per socket and delta), the deltas lost
    (never arrived), the deltas appended per second, the cores each process used and
    its CPU per delta or frame."""

    latencies: list[float]
    lost: int
    rate: float
    cores: dict[str, float]
    cpu_us: dict[str, float]  # per delta (writer, redis, projector), per frame (web, watchers)


async def latency_round(
    store: EventStore,
    port: int,
    threads: list[str],
    watchers: int,
    deltas: int,
    interval_s: float,
    deflate: bool = True,
) -> Streamed:
    """Every thread streams `deltas` deltas, one per interval; `watchers` sockets each.

    The sockets live in a process of their own (bench.watchers), so the writer's
    work and theirs do not queue behind each other in one event loop.
    """
    process, report = await watch(
        port, threads, watchers, deltas=deltas, deflate=deflate, wait_s=deltas * interval_s + 30
    )
    try:
        texts = delta_texts(deltas, str(time.time()))
        sent_at: dict[tuple[str, int], float] = {}
        start = time.perf_counter() + 0.05

        async def write(index: int, thread_id: str) -> None:
            run_id, message_id = new_run_id(thread_id), new_id("m")
            # Independent answers do not flush in step: the starts spread over an interval.
            first = start + interval_s * index / len(threads)
            for seq in range(1, deltas + 1):
                delay = first + (seq - 1) * interval_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                delta = ev.MessageDelta(
                    run_id=run_id, message_id=message_id, seq=seq, text=texts[seq - 1]
                )
                sent_at[(thread_id, seq)] = time.perf_counter()
                await store.append(Append(thread_id, [delta]))

        cpu_before, wall_before = cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(write(i, t) for i, t in enumerate(threads)))
        rate = len(sent_at) / max(1e-9, max(sent_at.values()) - start)
        watched = await report
        cpu_after, wall = cpu_seconds(), time.perf_counter() - wall_before
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    latencies = [
        arrived - sent_at[(thread_id, int(seq))]
        for thread_id, seen in watched.arrivals.items()
        for seq, times in seen.items()
        for arrived in times
    ]
    lost = len(threads) * watchers * deltas - len(latencies)
    if lost:
        print(f"  {lost} deltas never arrived: {watched.closed[:3]}", file=sys.stderr)
    # CPU each process spent while the round streamed: per delta appended for the writer,
    # Redis and the projector, per frame delivered for the web process and the watchers.
    cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_after if role in cpu_before}
    cpu["watchers"] = watched.cpu
    per_frame = {"web", "watchers"}
    cost = {
        role: seconds * 1e6 / max(1, len(latencies) if role in per_frame else len(sent_at))
        for role, seconds in cpu.items()
    }
    return Streamed(latencies, lost, rate, {role: s / wall for role, s in cpu.items()}, cost)


async def bytes_round(
    store: EventStore, settings: Settings, port: int, words: int, ms_per_word: int, deflate: bool
) -> tuple[float, float]:
    """One answer of the real worker on the scripted model, watched by one socket.

    Returns the bytes the delta frames carried on the wire per byte of their
    text, and the bytes per frame beyond the text.
    """
    thread_id, _ = await commands.create_thread(store)
    process, report = await watch(port, [thread_id], 1, until="run.completed", deflate=deflate)
    try:
        await commands.send_message(store, thread_id, f"bytes {time.time()}", "assistant")
        model = ScriptedLLM(words=words, delay_ms=ms_per_word)
        await Worker(store.backend, store, model, settings).run_once()
        watched = await report
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if not watched.frames:
        raise RuntimeError(f"the watcher saw no delta: {watched.closed}")
    ratio = watched.frame_bytes / watched.text_bytes
    overhead = (watched.frame_bytes - watched.text_bytes) / watched.frames
    return ratio, overhead


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


@dataclass(frozen=True)
class Sizes:
    answers: list[int]
    watchers: int
    fanout: int
    deltas: int
    rounds: int
    words: int
    delays: tuple[int, ...]
    answer_words: int


QUICK = Sizes(
    answers=[1, 4],
    watchers=2,
    fanout=20,
    deltas=8,
    rounds=1,
    words=20,
    delays=(0, 10),
    answer_words=20,
)


def sizes(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return QUICK
    return Sizes(
        answers=[int(a) for a in args.answers.split(",") if a],
        watchers=args.watchers,
        fanout=args.fanout,
        deltas=args.deltas,
        rounds=args.rounds,
        words=args.words,
        delays=(0, 10, 25, 40, 80),
        answer_words=args.answer_words,
    )


def command_line() -> str:
    return shlex.join(["python", "-m", "bench.live_latency", *sys.argv[1:]])


async def measure(args: argparse.Namespace, url: str, port: int, out: TextIO) -> list[Row]:
    size = sizes(args)
    interval = args.interval_ms / 1000
    settings = Settings.from_env({"SLIPSTREAM_PARTITIONS": PARTITIONS})
    # A connection per answer at most: a saturated Redis makes appends wait on it, not
    # on the bench's pool (which would raise once its wait ran out).
    backend = Backend.connect(url, max_connections=max(64, *size.answers))
    store = EventStore(backend, Keyspace(settings.partitions))
    rows: list[Row] = []
    try:
        # The threads are made once and streamed into again each round.
        scenarios: list[tuple[Row, list[str], int]] = []
        for answers in size.answers:
            threads = [(await commands.create_thread(store))[0] for _ in range(answers)]
            answer = "answer" if answers == 1 else "answers"
            watcher = "watcher" if size.watchers == 1 else "watchers"
            name = f"live: delta → websocket, {answers} {answer} {TIMES} {size.watchers} {watcher}"
            scenarios.append((Row(name, "ms"), threads, size.watchers))
        if size.fanout:
            thread = (await commands.create_thread(store))[0]
            name = f"live: delta → websocket, 1 thread {TIMES} {size.fanout} watchers"
            scenarios.append((Row(name, "ms"), [thread], size.fanout))
        print(
            f"\nDelta append -> websocket arrival ({size.rounds} rounds; each answer 1 delta/"
            f"{args.interval_ms} ms; {'with' if args.projector else 'no'} projector)",
            file=out,
        )
        header = ("answers", "watchers", "arrivals", "appends/s", "median ms", "p90 ms", "p99 ms")
        print(" ".join(f"{h:>10}" for h in header), file=out)
        for _ in range(size.rounds):
            for row, threads, watchers in scenarios:
                streamed = await latency_round(
                    store, port, threads, watchers, size.deltas, interval
                )
                ms = [x * 1000 for x in streamed.latencies]
                row.rounds.append((statistics.median(ms), percentile(ms, 0.99)))
                if streamed.lost:
                    row.notes.append(f"{streamed.lost} lost")
                cost = " ".join(f"{k} {v:.0f}" for k, v in streamed.cpu_us.items())
                print(
                    f"{len(threads):>10} {watchers:>10} {len(ms):>10} {streamed.rate:>10.0f} "
                    f"{statistics.median(ms):>10.2f} {percentile(ms, 0.90):>10.2f} "
                    f"{percentile(ms, 0.99):>10.2f}   CPU µs per delta/frame: {cost}"
                    + (f"   {streamed.lost} LOST" if streamed.lost else ""),
                    file=out,
                )
        for row, _, _ in scenarios:
            if row.notes:
                row.name += f" ({', '.join(row.notes)})"
            rows.append(row)

        if size.answer_words:
            rows += await bytes_rows(store, settings, port, size, args.model_ms_per_word, out)
        if size.words:
            rows += await volume_rows(store, settings, size, out)
    finally:
        await backend.close()
    return rows


async def bytes_rows(
    store: EventStore, settings: Settings, port: int, size: Sizes, ms_per_word: int, out: TextIO
) -> list[Row]:
    print(
        f"\nWatcher bytes per delta frame (one answer of {size.answer_words} words, "
        f"scripted model at {ms_per_word} ms/word, flush window {settings.flush_ms} ms)",
        file=out,
    )
    rows: list[Row] = []
    for deflate, label in ((True, "permessage-deflate, as browsers"), (False, "uncompressed")):
        ratio, overhead = await bytes_round(
            store, dataclasses.replace(settings), port, size.answer_words, ms_per_word, deflate
        )
        row = Row(f"live: watcher bytes ÷ delta text ({label})", TEXT_RATIO)
        row.rounds.append((ratio, ratio))
        rows.append(row)
        print(
            f"  {label}: {ratio:.2f} {TEXT_RATIO}, {overhead:.1f} bytes per frame beyond it",
            file=out,
        )
    return rows


async def volume_rows(store: EventStore, settings: Settings, size: Sizes, out: TextIO) -> list[Row]:
    print(
        f"\nEntries written per 100 words of answer (scripted model, {size.words} words)",
        file=out,
    )
    print(f"{'ms/word':>8} {'words/s':>8} {'deltas':>8} {'all run events':>15}", file=out)
    rows: list[Row] = []
    for delay in size.delays:
        volume = await write_volume(store, dataclasses.replace(settings), delay, size.words)
        rate_label = "inf" if delay == 0 else f"{1000 / delay:.0f}"
        print(
            f"{delay:>8} {rate_label:>8} {volume['deltas']:>8.1f} {volume['entries']:>15.1f}",
            file=out,
        )
        row = Row(f"entries per 100 words, model at {delay} ms/word", "entries/100 words")
        row.rounds.append((volume["entries"], volume["entries"]))
        rows.append(row)
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: every row in seconds")
    parser.add_argument("--json", action="store_true", help="only the rows, as JSON, on stdout")
    parser.add_argument("--answers", default="1,10,100,500")
    parser.add_argument("--watchers", type=int, default=2, help="sockets per answer's thread")
    parser.add_argument("--fanout", type=int, default=1000, help="sockets on one thread (0: no)")
    parser.add_argument("--deltas", type=int, default=40, help="deltas per answer and round")
    parser.add_argument("--interval-ms", type=int, default=50, help="between an answer's deltas")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--words", type=int, default=300, help="answer length for write volume (0: none)"
    )
    parser.add_argument(
        "--answer-words", type=int, default=120, help="answer length for bytes (0: none)"
    )
    parser.add_argument("--model-ms-per-word", type=int, default=20, help="model pace for bytes")
    parser.add_argument("--no-projector", dest="projector", action="store_false")
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="run the web process and projector from this checkout (e.g. an earlier commit's,"
        " from `git worktree add`), to time its live path the same way",
    )
    parser.add_argument("--profile-web", metavar="FILE", help="cProfile the web process into FILE")
    args = parser.parse_args()
    out = sys.stderr if args.json else sys.stdout
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server())
        # One user holds every socket: the per-user limit would refuse most of them.
        port = stack.enter_context(
            web_process(
                url,
                {"SLIPSTREAM_SOCKETS_PER_USER": "100000"},
                source=args.source,
                profile=args.profile_web,
            )
        )
        if args.projector:
            stack.enter_context(projector_process(url, source=args.source))
        rows = await measure(args, url, port, out)
    print(f"\n({time.monotonic() - started:.0f} s)", file=out)
    if args.json:
        command = command_line()
        table = [
            {"name": r.name, "unit": r.unit, "median": r.median, "p99": r.p99, "command": command}
            for r in rows
        ]
        sys.stdout.write(orjson.dumps({"rows": table}).decode() + "\n")
    else:
        print("\nRows (medians over rounds)", file=out)
        for row in rows:
            print(
                f"  {row.name}: median {row.median:.2f}, p99 {row.p99:.2f} {row.unit}"
                + (f"  [{row.spread()}]" if row.spread() else ""),
                file=out,
            )


if __name__ == "__main__":
    asyncio.run(main())
