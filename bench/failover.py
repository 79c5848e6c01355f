"""Benchmark: what a master's failover loses, with and without WAIT, and what WAIT costs.

    python -m bench.failover [--trials 3] [--writers 32] [--before-s 1.0] [--lag-ms 0 20]
    python -m bench.failover --loss-only | --latency-only [--sends 500]
    python -m bench.failover --quick     # tiny sizes: checks that every row is produced

Loss: for each trial, each link lag and each mode (no WAIT:
SLIPSTREAM_WAIT_REPLICAS=0, and WAIT 1 100 ms after the append), a fresh
Redis Cluster of 3 masters and 3 replicas (tests/redis_cluster.py) takes user
messages from `writers` coroutines, each sending one message at a time to a
thread of one partition through `send_message` (the append behind the API's
202). `before_s` after every writer is going, the partition's master dies;
the writers go on (their calls fail until its replica is promoted, after the
2 s node timeout and an election) until writes have flowed again for half a
second. Then every thread is read back from the promoted master: a message
whose append returned before the kill but is not there is an acknowledged
write lost. Also reported: the time from the kill until the first append
sent after it returned (writes flow again).

Two faults. "loopback, kill -9": the master process is killed on this host;
the kernel still delivers to the replica what the master wrote before it
died, so only what it had not yet written could be lost. "N ms link, host
crash": the master's link to its replica lags N ms (bench/laggy_link.py, a
proxy the master announces as its address), and at the kill the link drops
what it holds, as a crashed host or a cut network would.

Latency: the web role on one healthy cluster (tests/harness.py, in this
process, no workers), one per mode, sends alternating between them, one at
a time, each from a user of its own (SLIPSTREAM_AUTH=header); p50 and p99 of
the POST /messages round trip (the 202), and of the append behind it alone
(`send_message` from this process, no HTTP), on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.laggy_link import LaggyLink, lag_replica_link
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace, new_thread_id
from slipstream.store import EventStore
from slipstream.threads import create_thread_with_id, send_message
from tests.conftest import TEST_ENV
from tests.harness import running_system
from tests.redis_cluster import Cluster

PARTITIONS = 16
VICTIM = 0  # the partition whose master is killed
WAIT_MS = 100


@dataclass
class Trial:
    wait_replicas: int
    lag_ms: int  # the lag of the link from the master to its replica (0: loopback as it is)
    acked_before: int = 0  # appends that returned before the kill
    acked_after: int = 0
    lost: int = 0  # returned, but not on the promoted master
    lost_ids: list[str] = field(default_factory=list)
    failed: int = 0  # calls that raised (the client knows: not promised)
    flow_again_s: float = 0.0  # kill -> first append that returned
    short_before: int = 0  # promised writes unconfirmed before the kill
    short: int = 0  # all of them (after the kill, the promoted replica has no replica)
    unwaited: int = 0
    errors: Counter[str] = field(default_factory=Counter)


@contextmanager
def fresh_cluster() -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="slipstream-failover-"))
    cluster = Cluster(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def threads_of(partition: int, count: int) -> list[str]:
    keys = Keyspace(PARTITIONS)
    found: list[str] = []
    while len(found) < count:
        thread_id = new_thread_id()
        if keys.partition(thread_id).number == partition:
            found.append(thread_id)
    return found


async def loss_trial(wait_replicas: int, writers: int, before_s: float, lag_ms: int) -> Trial:
    trial = Trial(wait_replicas, lag_ms)
    threads = threads_of(VICTIM, writers)
    link: LaggyLink | None = None
    with fresh_cluster() as cluster:
        victim = cluster.master_of(Keyspace(PARTITIONS).partition(threads[0]).feed)
        if lag_ms:
            link = lag_replica_link(cluster, victim, lag_ms)
        backend = Backend.connect(cluster.url)
        store = EventStore(
            backend,
            Keyspace(PARTITIONS),
            queue_max=1_000_000,  # nobody answers: every message queues behind the first
            wait_replicas=wait_replicas,
            wait_ms=WAIT_MS,
        )
        try:
            for thread_id in threads:
                await create_thread_with_id(store, thread_id, "failover")
            cluster.wait_healthy()  # the threads are on the replica too
            acked: dict[str, list[str]] = {t: [] for t in threads}
            killed_at: list[float] = []
            stop, flowing = asyncio.Event(), asyncio.Event()
            warm = asyncio.Semaphore(0)  # released once by each writer's first append

            async def write(thread_id: str) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    began = time.monotonic()
                    try:
                        sent = await send_message(store, thread_id, f"m{n}", "assistant")
                    except Exception as exc:  # any refusal: the caller knows, nothing was promised
                        trial.failed += 1
                        trial.errors[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1
                        await asyncio.sleep(0.01)  # the node is down: not a busy loop
                        continue
                    acked[thread_id].append(sent.event_id)
                    if len(acked[thread_id]) == 1:
                        warm.release()
                    if not killed_at or began < killed_at[0]:
                        trial.acked_before += 1  # maybe by the old master
                    else:
                        trial.acked_after += 1
                        if not flowing.is_set():
                            trial.flow_again_s = time.monotonic() - killed_at[0]
                            flowing.set()

            tasks = [asyncio.create_task(write(t)) for t in threads]
            for _ in threads:  # every writer going: connections made, the script loaded
                await warm.acquire()
            await asyncio.sleep(before_s)
            killed_at.append(time.monotonic())
            trial.short_before = store.replica_wait.short
            if link is not None:
                link.crash()  # the host is gone: what its network held is lost too
            victim.kill()
            try:
                async with asyncio.timeout(30):
                    await flowing.wait()
            except TimeoutError:
                print(f"writes did not flow again within 30 s: {trial.errors}", file=sys.stderr)
                raise
            await asyncio.sleep(0.5)  # writes flow to the promoted master for a while
            stop.set()
            await asyncio.gather(*tasks)
            cluster.wait_healthy()
            for thread_id, ids in acked.items():
                present = {s.id for s in await store.read(thread_id)}
                missing = [i for i in ids if i not in present]
                trial.lost += len(missing)
                trial.lost_ids += missing
            trial.short = store.replica_wait.short
            trial.unwaited = store.replica_wait.unwaited
        finally:
            await backend.close()
            if link is not None:
                link.stop()
    return trial


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def latency(sends: int) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """Round trips (ms) of the 202 and of the append alone, per WAIT replicas setting."""
    base = Settings.from_env(
        TEST_ENV | {"SLIPSTREAM_PARTITIONS": str(PARTITIONS), "SLIPSTREAM_AUTH": "header"}
    )
    took: dict[int, list[float]] = {0: [], 1: []}
    appends: dict[int, list[float]] = {0: [], 1: []}
    with fresh_cluster() as cluster:
        backends = {mode: Backend.connect(cluster.url) for mode in took}
        try:
            async with (
                running_system(
                    backends[0], dataclasses.replace(base, wait_replicas=0), workers=False
                ) as plain,
                running_system(
                    backends[1],
                    dataclasses.replace(base, wait_replicas=1, wait_ms=WAIT_MS),
                    workers=False,
                ) as waiting,
            ):
                systems = {0: plain, 1: waiting}
                for n in range(sends + 10):  # the first 10 warm connections and scripts
                    for mode in (0, 1) if n % 2 else (1, 0):
                        system = systems[mode]
                        # A user of its own each time: nobody answers, and a user's
                        # queued runs are counted at each send.
                        user = {"X-Forwarded-User": f"u{mode}x{n}"}
                        made = await system.http.post("/api/threads", json={}, headers=user)
                        thread_id = made.json()["id"]
                        began = time.perf_counter()
                        accepted = await system.http.post(
                            f"/api/threads/{thread_id}/messages",
                            json={"content": f"message {n}"},
                            headers=user,
                        )
                        elapsed = (time.perf_counter() - began) * 1000
                        assert accepted.status_code == 202, accepted.text
                        store = system.runtime.store
                        began = time.perf_counter()
                        await send_message(store, thread_id, f"appended {n}", "assistant")
                        alone = (time.perf_counter() - began) * 1000
                        if n >= 10:
                            took[mode].append(elapsed)
                            appends[mode].append(alone)
                short = waiting.runtime.store.replica_wait.short
                if short:
                    print(f"(note: {short} WAITs came back short during the latency run)")
        finally:
            for backend in backends.values():
                await backend.close()
    return took, appends


def describe(trials: list[Trial]) -> str:
    lost = [t.lost for t in trials]
    flow = [t.flow_again_s for t in trials]
    acked = [t.acked_before for t in trials]
    first = trials[0]
    lag = f"{first.lag_ms} ms link, host crash" if first.lag_ms else "loopback, kill -9"
    mode = f"WAIT 1 {WAIT_MS} ms" if first.wait_replicas else "no WAIT"
    return (
        f"| {lag} | {mode} "
        f"| {sum(lost)} of {sum(acked)} ({', '.join(map(str, lost))}) "
        f"| {statistics.median(flow):.2f} s ({min(flow):.2f}-{max(flow):.2f}) "
        f"| {sum(t.failed for t in trials)} "
        f"| {sum(t.short_before for t in trials)} / {sum(t.short - t.short_before for t in trials)}"
        f" / {sum(t.unwaited for t in trials)} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--before-s", type=float, default=1.0)
    parser.add_argument(
        "--lag-ms",
        type=int,
        default=[0, 20],
        nargs="*",
        help="lags (ms) of the master's link to its replica, each measured; 0: loopback as it is",
    )
    parser.add_argument("--sends", type=int, default=400)
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("--loss-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.writers, args.before_s, args.sends = 1, 4, 0.3, 20
    if not args.latency_only:
        results: dict[tuple[int, int], list[Trial]] = {}
        for _ in range(args.trials):
            for lag_ms in args.lag_ms:
                for mode in (0, 1):
                    trial = await loss_trial(mode, args.writers, args.before_s, lag_ms)
                    print(
                        f"link {lag_ms} ms, WAIT {mode}: lost {trial.lost} of "
                        f"{trial.acked_before}, writes again after {trial.flow_again_s:.2f} s",
                        file=sys.stderr,
                    )
                    results.setdefault((lag_ms, mode), []).append(trial)
        print(
            f"\nkill -9 of a master under {args.writers} writers of user messages "
            f"({args.trials} trials, {args.before_s} s of writes before the kill)\n"
        )
        print(
            "| replica link, fault | mode | acknowledged before the kill, then lost (per trial) "
            "| writes flow again after | calls refused meanwhile "
            "| unconfirmed before the kill / after / not waited |"
        )
        print("|---|---|---|---|---|---|")
        for trials in results.values():
            print(describe(trials))
    if not args.loss_only:
        took, appends = await latency(args.sends)
        print(f"\nA user message on the cluster ({args.sends} of each, one at a time)\n")
        print("| mode | 202 of POST .../messages p50 | p99 | its append alone p50 | p99 |")
        print("|---|---|---|---|---|")
        for mode, values in took.items():
            label = f"WAIT 1 {WAIT_MS} ms" if mode else "no WAIT"
            alone = appends[mode]
            print(
                f"| {label} | {percentile(values, 50):.2f} ms | {percentile(values, 99):.2f} ms "
                f"| {percentile(alone, 50):.2f} ms | {percentile(alone, 99):.2f} ms |"
            )


if __name__ == "__main__":
    asyncio.run(main())
