"""Soak: a whole deployment under many people at once for N minutes, then checked.

    python -m bench.soak --minutes N [--users 16] [--words 60] [--delay-ms 5]
        [--drain-s 60] [--seed 1] [--logs DIR] [--json]

Starts, each a process of its own on free loopback ports: a redis-server, a web
process (`python -m service`, SLIPSTREAM_AUTH=tokens), two workers (`python -m
consumers`) and a projector (`python -m projections`), all logging JSON lines to
files. Makes a user per simulated person (the first with `python -m service
users add`), then lets the people loose for `--minutes` (bench.soak_users: threads, two
sockets on each, messages answered, cancelled, or parked for an approval and
approved). Then it stops them, waits (at most `--drain-s`) until every run is
terminal and the projector has folded every event, and checks that every
stored view equals a rebuild from its stream (projections.replay).

It reports the runs by terminal status, events appended, errors (HTTP answers
that were not expected, sockets dropped, lines logged at ERROR by any process),
latencies (send → 202, → first delta on a socket, → completed; cancel →
cancelled; approve → resumed) and each process's RSS at the start and the end;
as a table, or with `--json` as one JSON object on stdout (the table then goes
to stderr). Exits 1 when a check fails. Every phase is bounded in time, and the
processes are stopped on every way out (an error, Ctrl+C, SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from bench.live_latency import CHILDREN, cpu_seconds, percentile
from bench.soak_users import WAIT_S, Person, Tally
from projections.replay import replay
from projections.views import TERMINAL, ViewStore
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.store import EventStore
from slipstream.users import Users
from tests.ports import free_port
from tests.processes import (
    ROOT,
    env_for,
    redis_process,
    spawn,
    wait_for_log,
    wait_healthy,
)

AGENTS = ROOT / "bench" / "soak_agents.toml"
PARTITIONS = 16  # a deployment's default
ROLES = (
    ("web", "service"),
    ("worker 1", "consumers"),
    ("worker 2", "consumers"),
    ("projector", "projections"),
)
READY_LINE = {"consumers": "taking work from", "projections": "folding"}
START_S = 60.0  # longest a process may take to start on a loaded machine
PEOPLE_GRACE_S = 4 * WAIT_S
"""After the deadline a person finishes the run in hand: at most a few bounded waits."""
CHECK_S = 300.0
"""The checks (a replay per thread) on thousands of threads; past it the soak fails."""
STOP_S = 15.0  # a process still running this long after SIGTERM is killed
SAMPLE_S = 10.0  # memory sampled this often, for the peak and the series
WARM_S = 60.0  # the sample taken as warm (see Memory.summary)


@dataclass
class Phases:
    """How long each phase of the soak took (s), for the report."""

    taken: dict[str, float] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)

    def done(self, phase: str) -> float:
        now = time.monotonic()
        self.taken[phase] = round(now - self.since, 1)
        self.since = now
        return self.taken[phase]


@dataclass
class Deployment:
    """The processes of one soak: where they listen, their pids and their logs."""

    redis_url: str
    base: str
    env: dict[str, str]
    pids: dict[str, int]
    logs: dict[str, Path]


def deployment_env(redis_url: str, web_port: int, args: argparse.Namespace) -> dict[str, str]:
    """A deployment's settings: the defaults but for the model's speed, tokens and logs.

    The limits are the defaults (the tests' environment lifts them): the people
    pause between messages to stay within them, and a 429 is an error.
    """
    return env_for(
        REDIS_URL=redis_url,
        PORT=str(web_port),
        SLIPSTREAM_AUTH="tokens",
        SLIPSTREAM_AGENTS=str(AGENTS),
        SLIPSTREAM_SCRIPTED_WORDS=str(args.words),
        SLIPSTREAM_SCRIPTED_DELAY_MS=str(args.delay_ms),
        SLIPSTREAM_PARTITIONS=str(PARTITIONS),
        SLIPSTREAM_LEASE_MS="15000",
        SLIPSTREAM_SENDS_PER_MINUTE="120",
        SLIPSTREAM_RUNS_PER_USER="20",
        SLIPSTREAM_SOCKETS_PER_USER="50",
        SLIPSTREAM_LOG_FORMAT="json",
        SLIPSTREAM_LOG_LEVEL="INFO",
    )


@contextmanager
def deployment(workdir: Path, args: argparse.Namespace) -> Iterator[Deployment]:
    """Redis, web, two workers and a projector, started and ready; all stopped after."""
    redis_port, web_port = free_port(), free_port()
    with redis_process(workdir / "redis", redis_port) as redis, stopped_together() as started:
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = deployment_env(redis_url, web_port, args)
        pids = {"redis": redis.pid}
        logs: dict[str, Path] = {}
        for role, module in ROLES:
            logs[role] = workdir / f"{role.replace(' ', '')}.log"
            process = spawn(module, env, logs[role])
            started.append(process)
            pids[role] = process.pid
        for (role, module), process in zip(ROLES, started, strict=True):
            if module == "service":
                wait_healthy(web_port, process, within=START_S)
            else:
                wait_for_log(logs[role], READY_LINE[module], process, within=START_S)
        CHILDREN.clear()
        CHILDREN.update(pids)
        yield Deployment(redis_url, f"http://127.0.0.1:{web_port}", env, pids, logs)


@contextmanager
def stopped_together() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes to stop on the way out: all told at once (SIGTERM), each killed if it
    has not exited within STOP_S. (One after the other, they took seconds each.)"""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        for process in started:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def add_users(env: dict[str, str], backend: Backend, count: int) -> list[tuple[str, str]]:
    """A user per person: (name, token) each.

    The first with `python -m service users add`, as an operator makes one (its token
    alone on the last line); the others with the call behind that command
    (slipstream.users), since each command is a Python start-up of a second or more.
    """
    names = [f"soak{n:03d}" for n in range(count)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "service", "users", "add", names[0]),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(START_S):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"users add {names[0]} exited {process.returncode}: {err!r}")
    users = Users(backend)
    tokens = [out.decode().strip().splitlines()[-1]]
    tokens += await asyncio.gather(*(users.add(name) for name in names[1:]))
    return list(zip(names, tokens, strict=True))


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process (VmRSS, KiB), or None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


@dataclass
class Memory:
    """RSS per process: at the start, every SAMPLE_S, and at the end."""

    pids: dict[str, int]
    started: float = field(default_factory=time.monotonic)
    series: list[tuple[float, dict[str, int | None]]] = field(default_factory=list)

    def sample(self) -> dict[str, int | None]:
        now = {role: rss_kib(pid) for role, pid in self.pids.items()}
        self.series.append((time.monotonic() - self.started, now))
        return now

    async def every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.sample()

    def summary(self) -> dict[str, dict[str, int | None]]:
        out: dict[str, dict[str, int | None]] = {}
        for role in self.pids:
            seen = [kib for _, s in self.series if (kib := s[role]) is not None]
            # Past the first minute the pools, caches and allocator arenas are warm:
            # growth from there on is what a leak would show.
            warm = next((s for at, s in self.series if at >= WARM_S), self.series[-1][1])
            out[role] = {
                "start": self.series[0][1][role],
                "at_1_min": warm[role],
                "peak": max(seen) if seen else None,
                "end": self.series[-1][1][role],
            }
        return out


async def live(people: list[Person], minutes: float, tally: Tally) -> None:
    """Every person at once until the deadline, then each finishes the run in hand."""
    until = time.monotonic() + minutes * 60
    tasks = [asyncio.create_task(person.live(until)) for person in people]
    try:
        done, busy = await asyncio.wait(tasks, timeout=minutes * 60 + PEOPLE_GRACE_S)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if busy:
        tally.error("people still busy", f"{len(busy)} past the deadline's grace")
    for task in done:
        if task.exception() is not None:
            tally.error("person crashed", repr(task.exception()))


async def drain(store: EventStore, tally: Tally, within_s: float) -> dict[str, str]:
    """Wait until every run is terminal in its thread's stored view and every view has
    folded its whole stream; what is still unsettled at the bound, per thread."""
    views = ViewStore(store)
    runs_of = tally.runs_of()
    pending = {thread_id: "not read yet" for thread_id in tally.threads}
    gate = asyncio.Semaphore(32)

    async def unsettled(thread_id: str) -> str | None:
        async with gate:
            view = await views.load(thread_id)
            tail = await store.redis.xrevrange(store.stream_key(thread_id), count=1)
        if view is None:
            return "no stored view"
        last = str(tail[0][0]) if tail else None
        if view.last_event_id != last:
            return f"view at {view.last_event_id}, stream at {last}"
        for run_id in runs_of[thread_id]:
            run = view.runs.get(run_id)
            if run is None or run.status not in TERMINAL:
                return f"run {run_id} is {run.status if run else 'missing'}"
        return None

    deadline = time.monotonic() + within_s
    while pending and time.monotonic() < deadline:
        found = await asyncio.gather(*(unsettled(t) for t in pending))
        pending = {t: why for t, why in zip(list(pending), found, strict=True) if why}
        if pending:
            await asyncio.sleep(0.2)
    return pending


async def compare(store: EventStore, threads: list[str]) -> tuple[int, list[str]]:
    """Every thread's stored views against a rebuild from its stream: how many were
    compared, and one line per thread that differs."""
    gate = asyncio.Semaphore(16)
    differ: list[str] = []

    async def one(thread_id: str) -> None:
        async with gate:
            replayed = await replay(store, thread_id)
        if not replayed.same:
            first = replayed.differences[0]
            differ.append(
                f"{thread_id}: {len(replayed.differences)} differences, first "
                f"{first.where} {first.field}: stored {first.stored!r:.120} "
                f"rebuilt {first.rebuilt!r:.120}"
            )

    await asyncio.gather(*(one(t) for t in threads))
    return len(threads), differ


async def events_appended(store: EventStore, threads: list[str]) -> int:
    """Entries in the soak's thread streams (nothing trims them: compaction is off)."""
    gate = asyncio.Semaphore(32)

    async def length(thread_id: str) -> int:
        async with gate:
            return int(await store.redis.xlen(store.stream_key(thread_id)))

    return sum(await asyncio.gather(*(length(t) for t in threads)))


def logged_errors(logs: dict[str, Path], tally: Tally) -> Counter[str]:
    """Lines logged at ERROR or above by each process (an error each); lines per level."""
    levels: Counter[str] = Counter()
    for role, path in logs.items():
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                # Not one of ours: a traceback printed past the logger is an error too.
                if "Traceback" in line or "ERROR" in line:
                    tally.error(f"logged ERROR ({role})", line[:300])
                continue
            level = str(record.get("level"))
            levels[f"{role} {level}"] += 1
            if level in ("ERROR", "CRITICAL"):
                tally.error(f"logged ERROR ({role})", str(record.get("message"))[:300])
    return levels


async def used_memory(backend: Backend) -> int:
    """What Redis holds (INFO used_memory, bytes): its data, beside the process's RSS."""
    info = await backend.client.info("memory")
    return int(info["used_memory"])


def latency_rows(tally: Tally) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for name in (
        "send → 202",
        "send → first delta",
        "send → completed",
        "cancel → cancelled",
        "approve → resumed",
    ):
        ms = [s * 1000 for s in tally.latencies.get(name, [])]
        rows[name] = {
            "count": len(ms),
            "median": statistics.median(ms) if ms else 0.0,
            "p99": percentile(ms, 0.99) if ms else 0.0,
            "max": max(ms) if ms else 0.0,
        }
    return rows


async def soak(running: Deployment, args: argparse.Namespace) -> dict[str, Any]:
    """The people, the drain and the checks; the report as a dict."""
    tally = Tally()
    phases = Phases()
    settings = Settings.from_env({"SLIPSTREAM_PARTITIONS": str(PARTITIONS)})
    backend = Backend.connect(running.redis_url)
    users = await add_users(running.env, backend, args.users)
    phases.done("users")
    store = EventStore.from_settings(backend, settings)
    memory = Memory(running.pids)
    memory.sample()
    data_before = await used_memory(backend)
    cpu_before = cpu_seconds()
    load_before = os.getloadavg()
    sampler = asyncio.create_task(memory.every(SAMPLE_S))
    people = [
        Person(name, token, running.base, tally, seed=args.seed * 10_000 + n)
        for n, (name, token) in enumerate(users)
    ]
    try:
        await live(people, args.minutes, tally)
        lived = phases.done("load")
        unsettled = await drain(store, tally, args.drain_s)
        phases.done("drain")
        for thread_id, why in unsettled.items():
            tally.error("not settled after the drain", f"{thread_id}: {why}")
        threads = sorted(tally.threads)
        try:
            async with asyncio.timeout(CHECK_S):
                checked, differ = await compare(store, threads)
        except TimeoutError:
            checked, differ = 0, [f"the replays took longer than {CHECK_S:.0f} s"]
        events = await events_appended(store, threads)
        statuses = await terminal_statuses(store, tally)
        phases.done("checks")
        data_after = await used_memory(backend)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in people))
        await backend.close()
    levels = logged_errors(running.logs, tally)
    for role, kib in memory.sample().items():
        if kib is None:
            tally.error("process gone", f"{role} (pid {running.pids[role]}) exited during the soak")
    cpu_after = cpu_seconds()
    errors = sum(tally.errors.values())
    return {
        "command": shlex.join(["python", "-m", "bench.soak", *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "minutes": args.minutes,
        "users": args.users,
        "seconds": round(lived, 1),
        "phases_s": phases.taken,
        "model": {"words": args.words, "delay_ms": args.delay_ms},
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "runs": dict(statuses),
        "actions": dict(tally.actions),
        "threads": len(threads),
        "events": events,
        "errors": errors,
        "errors_by_kind": dict(tally.errors),
        "error_samples": tally.error_samples,
        "log_lines": dict(levels),
        "unsettled": len(unsettled),
        "views_checked": checked,
        "views_differ": differ,
        "latency_ms": latency_rows(tally),
        "rss_kib": memory.summary(),
        "redis_used_memory": {"start": data_before, "end": data_after},
        "rss_series": [{"s": round(at, 1), **sampled} for at, sampled in memory.series],
        "cpu_s": {
            role: round(cpu_after[role] - cpu_before.get(role, 0.0), 1)
            for role in cpu_after
            if role in cpu_before
        },
        "passed": errors == 0 and not differ and checked == len(threads) and bool(statuses),
    }


async def terminal_statuses(store: EventStore, tally: Tally) -> Counter[str]:
    """Each run's status in its thread's stored view (equal to the rebuild once checked)."""
    views = ViewStore(store)
    gate = asyncio.Semaphore(32)

    async def of_thread(thread_id: str, run_ids: list[str]) -> list[str]:
        async with gate:
            view = await views.load(thread_id)
        runs = view.runs if view else {}
        return [runs[r].status if r in runs else "missing" for r in run_ids]

    found = await asyncio.gather(*(of_thread(t, r) for t, r in tally.runs_of().items()))
    return Counter(status for statuses in found for status in statuses)


def table(report: dict[str, Any], out: TextIO) -> None:
    def line(text: str = "") -> None:
        print(text, file=out)

    line(
        f"Soak: {report['minutes']} min ({report['seconds']} s of load), {report['users']} people, "
        f"web + 2 workers + projector, scripted model {report['model']['words']} words at "
        f"{report['model']['delay_ms']} ms/word; {report['when']}; load average "
        f"{report['load_before'][0]} before, {report['load_after'][0]} after"
    )
    line(f"  {report['command']}")
    line("  phases (s): " + ", ".join(f"{p} {s}" for p, s in report["phases_s"].items()))
    line()
    runs = report["runs"]
    line(f"runs: {sum(runs.values())} ({', '.join(f'{n} {s}' for s, n in sorted(runs.items()))})")
    actions = report["actions"]
    line("  what the people did: " + ", ".join(f"{n} {a}" for a, n in sorted(actions.items())))
    line(
        f"threads: {report['threads']}; events appended: {report['events']} "
        f"({report['events'] / max(1.0, report['seconds']):.0f}/s)"
    )
    line(
        f"checks: {report['unsettled']} threads unsettled after the drain; "
        f"{report['views_checked'] - len(report['views_differ'])} of {report['threads']} "
        f"stored views equal their rebuild"
    )
    line(f"errors: {report['errors']}")
    for kind, count in sorted(report["errors_by_kind"].items()):
        line(f"  {count:>6}  {kind}")
    for sample in report["error_samples"][:10]:
        line(f"    {sample}")
    for differ in report["views_differ"][:10]:
        line(f"    {differ}")
    line()
    line(f"{'latency':<22}{'count':>8}{'median ms':>12}{'p99 ms':>10}{'max ms':>10}")
    for name, row in report["latency_ms"].items():
        line(
            f"{name:<22}{row['count']:>8}{row['median']:>12.1f}{row['p99']:>10.1f}{row['max']:>10.1f}"
        )
    line()
    heads = ("RSS MiB: start", "1 min", "peak", "end", "end-start", "end-1min", "CPU s")
    line(f"{'process':<12}{heads[0]:>15}" + "".join(f"{h:>10}" for h in heads[1:]))
    for role, rss in report["rss_kib"].items():
        start, warm, peak, end = (rss[k] or 0 for k in ("start", "at_1_min", "peak", "end"))
        cpu = report["cpu_s"].get(role, 0.0)
        if rss["end"]:
            change = f"{(end - start) / 1024:>+10.1f}{(end - warm) / 1024:>+10.1f}"
        else:
            change = f"{'gone':>10}{'':>10}"
        line(
            f"{role:<12}{start / 1024:>15.1f}{warm / 1024:>10.1f}{peak / 1024:>10.1f}"
            f"{end / 1024:>10.1f}{change}{cpu:>10.1f}"
        )
    data = report["redis_used_memory"]
    grown = data["end"] - data["start"]
    line(
        f"Redis used_memory (its data): {data['start'] / 2**20:.1f} MiB at the start, "
        f"{data['end'] / 2**20:.1f} MiB at the end "
        f"({grown / max(1, report['events']):.0f} bytes per event appended)"
    )
    line()
    line("PASSED" if report["passed"] else "FAILED")


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the soak as Ctrl+C does: processes stopped


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, required=True, help="how long the people act")
    parser.add_argument("--users", type=int, default=16, help="simulated people, each a user")
    parser.add_argument("--words", type=int, default=60, help="words of each scripted answer")
    parser.add_argument(
        "--delay-ms", type=int, default=5, help="the scripted model's pause per word"
    )
    parser.add_argument("--drain-s", type=float, default=60, help="longest wait for runs to end")
    parser.add_argument("--seed", type=int, default=1, help="the people's choices")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs here")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    args = parser.parse_args()
    if args.minutes <= 0 or args.users < 1:
        parser.error("--minutes must be above 0 and --users at least 1")
    # Set, not inherited: a shell starts a background job with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        with contextlib.ExitStack() as stack:
            if args.logs:
                workdir = args.logs
                workdir.mkdir(parents=True, exist_ok=True)
            else:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
            started = time.monotonic()
            running = stack.enter_context(deployment(workdir, args))
            ready = round(time.monotonic() - started, 1)
            report = asyncio.run(soak(running, args))
            stopping = time.monotonic()
        report["phases_s"] = {
            "start": ready,
            **report["phases_s"],
            "stop": round(time.monotonic() - stopping, 1),
        }
    except KeyboardInterrupt:
        print("soak: interrupted; the processes it started are stopped", file=sys.stderr)
        sys.exit(130)
    if args.json:
        table(report, sys.stderr)
        print(orjson.dumps(report).decode())
    else:
        table(report, sys.stdout)
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
