"""Redis Cluster faults while answers stream: a master killed, a slot moved, a node paused.

Each test breaks the cluster the way operators see it break, with real
processes (web, projector, two workers) or the whole system in this process,
and then checks that every accepted run ended exactly once with the scripted
model's reference text. The failover test also states what it lost, against
what Slipstream promises: no message that got a 202 and no run that was seen
completed may be lost (their appends wait for a replica, slipstream/replicas.py);
answer deltas are not promised (the final message.completed carries the whole
text), and are counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from redis.crc import key_slot
from websockets.asyncio.client import connect

from bench.laggy_link import LaggyLink, lag_replica_link
from consumers.llm.scripted import scripted_reply
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace, Partition
from tests.conftest import TEST_ENV
from tests.harness import System, frames_until, running_system
from tests.redis_cluster import Cluster, Node
from tests.test_redis_faults import Sender, healthy
from tests.test_run_faults import WORDS, wait_for
from tests.test_run_faults import Cluster as Processes
from tests.waits import until

pytestmark = pytest.mark.slow

KEYS = Keyspace(int(TEST_ENV["SLIPSTREAM_PARTITIONS"]))
TERMINAL = ("run.completed", "run.cancelled", "run.failed")
VICTIM = 0  # the partition whose master dies
FINISHED = ("completed", "cancelled", "failed")


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own: a kill leaves the session's cluster whole."""
    made = Cluster(tmp_path / "cluster")
    try:
        made.start()
        yield made
    finally:
        made.stop()


@dataclasses.dataclass
class Doomed:
    """The master of partition 0, to die mid-answer; behind a lagging link, or not."""

    master: Node
    link: LaggyLink | None

    def die(self) -> None:
        if self.link is not None:
            self.link.crash()  # a crashed host: what its network held is lost too
        self.master.kill()


@pytest.fixture(params=[0, 20], ids=["kill-9", "host-crash-behind-a-20ms-link"])
def doomed(own_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Doomed]:
    """kill -9 on this host loses nothing its replica was sent (the kernel delivers it);
    a host that crashes also loses what its link to the replica held: here 20 ms of it
    (bench/laggy_link.py), which is what the replica wait is for."""
    master = own_cluster.master_of(Partition(VICTIM).feed)
    lag_ms: int = request.param
    made = Doomed(master, lag_replica_link(own_cluster, master, lag_ms) if lag_ms else None)
    try:
        yield made
    finally:
        if made.link is not None:
            made.link.stop()


@pytest.fixture
def processes(own_cluster: Cluster, doomed: Doomed, tmp_path: Path) -> Iterator[Processes]:
    made = Processes(own_cluster.url, tmp_path)
    try:
        made.start(workers=2)
        yield made
    finally:
        made.close()


class Flood:
    """Sends short messages (`echo:`, answered at once) to `threads` from a thread of its
    own, one after another, until stopped; keeps when each 202 came."""

    def __init__(self, base: str, threads: list[str]) -> None:
        self.http = httpx.Client(base_url=base, timeout=10)
        self.threads = threads
        self.accepted: dict[str, dict[str, str]] = {}
        self.when: dict[str, float] = {}  # run id -> when its 202 came
        self.refused = 0
        self._pending: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pour, daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def count(self) -> int:
        with self._lock:
            return len(self.when)

    def accepted_before(self, moment: float) -> dict[str, dict[str, str]]:
        with self._lock:
            return {
                t: {r: c for r, c in runs.items() if self.when[r] < moment}
                for t, runs in self.accepted.items()
            }

    def _pour(self) -> None:
        n = 0
        while not self._stop.is_set():
            thread_id = self.threads[n % len(self.threads)]
            self._post(thread_id, f"echo: flood {n}", f"flood-{n}")
            n += 1

    def _post(self, thread_id: str, content: str, client_id: str) -> bool:
        try:
            response = self.http.post(
                f"/api/threads/{thread_id}/messages",
                json={"content": content, "client_id": client_id},
            )
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 202:
            with self._lock:
                run_id = response.json()["run_id"]
                self.accepted.setdefault(thread_id, {})[run_id] = content
                self.when[run_id] = time.monotonic()
            return True
        assert response is None or response.status_code == 503, response.text
        self.refused += 1
        self._pending.append((thread_id, content, client_id))
        return False

    def resend_refused(self) -> None:
        """Each refused send again, with its client id: written once however it went."""
        pending, self._pending = self._pending, []
        for thread_id, content, client_id in pending:
            assert self._post(thread_id, content, client_id), "a resend was refused"
        self.http.close()


def partition_of(thread_id: str) -> int:
    return KEYS.partition(thread_id).number


def streaming_thread(system: Processes, threads: list[str]) -> str:
    """One of `threads` whose answer has written text and not finished."""
    for thread_id in threads:
        for message in system.view(thread_id)["messages"]:
            if message["status"] == "streaming" and message["content"]:
                return thread_id
    return ""


def settled(system: Processes, threads: list[str]) -> bool:
    """Every run the threads' events request has ended, and their views say so."""
    for thread_id in threads:
        events = system.events(thread_id)
        ended = {e["run_id"] for e in events if e["type"] in TERMINAL}
        if any(e["type"] == "run.requested" and e["run_id"] not in ended for e in events):
            return False
        runs = system.view(thread_id)["runs"]
        if any(runs.get(run_id, {}).get("status") not in FINISHED for run_id in ended):
            return False
    return True


def completed_runs(system: Processes, threads: list[str]) -> set[str]:
    return {
        run_id
        for thread_id in threads
        for run_id, run in system.view(thread_id)["runs"].items()
        if run["status"] == "completed"
    }


@dataclasses.dataclass
class Losses:
    """What the kill took, counted against what was acknowledged before it."""

    accepted: int = 0  # messages that got a 202 before the kill
    lost_messages: int = 0  # of them, not in their thread afterwards
    completed: int = 0  # runs seen completed before the kill
    lost_completions: int = 0  # of them, not completed afterwards
    endings: Counter[int] = dataclasses.field(default_factory=Counter)  # terminal events per run
    wrong_texts: int = 0  # completed answers that are not the reference text
    delta_gaps: int = 0  # deltas missing from an attempt's sequence (not promised)
    attempts: int = 0  # run.started events after the first of each run (takeovers, retries)

    def __str__(self) -> str:
        twice = sum(1 for n in self.endings.elements() if n != 1)
        return (
            f"lost {self.lost_messages} of {self.accepted} messages acknowledged (202) before "
            f"the kill, {self.lost_completions} of {self.completed} runs seen completed; "
            f"runs ending other than once: {twice}; wrong final texts: {self.wrong_texts}; "
            f"answer deltas missing (not promised): {self.delta_gaps}; "
            f"extra attempts: {self.attempts}"
        )


def count_losses(
    system: Processes,
    accepted: dict[str, dict[str, str]],
    before: dict[str, dict[str, str]],
    completed_before: set[str],
) -> Losses:
    losses = Losses(
        accepted=sum(len(runs) for runs in before.values()), completed=len(completed_before)
    )
    for thread_id, runs in accepted.items():
        events = system.events(thread_id)
        sent = Counter(e["content"] for e in events if e["type"] == "message.sent")
        losses.lost_messages += sum(1 for c in before.get(thread_id, {}).values() if not sent[c])
        ends = Counter(e["run_id"] for e in events if e["type"] in TERMINAL)
        for run_id in runs:
            losses.endings[ends[run_id]] += 1
        started = Counter(e["run_id"] for e in events if e["type"] == "run.started")
        losses.attempts += sum(n - 1 for n in started.values())
        seqs: dict[tuple[str, int], list[int]] = {}
        for event in events:
            if event["type"] == "message.delta":
                seqs.setdefault((event["run_id"], event["attempt"]), []).append(event["seq"])
        for seq in seqs.values():
            assert seq == sorted(set(seq)), f"deltas repeated or out of order: {seq}"
            losses.delta_gaps += seq[-1] - len(seq)
        view = system.view(thread_id)
        for run_id, content in runs.items():
            run = view["runs"].get(run_id)
            if run is None:  # its message was lost with it: counted above, and as no ending
                losses.lost_completions += run_id in completed_before
                continue
            if run_id in completed_before and run["status"] != "completed":
                losses.lost_completions += 1
            reply = next(m for m in view["messages"] if m["id"] == run["reply_id"])
            if run["status"] == "completed" and reply["content"] != scripted_reply(content, WORDS):
                losses.wrong_texts += 1
    return losses


def test_a_master_dies_mid_answer_fails_over_and_loses_no_promise(
    own_cluster: Cluster,
    doomed: Doomed,
    processes: Processes,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    # 4 threads on the doomed master's partition, 4 elsewhere, and an idle one there for
    # the first run after its death.
    doomed_threads: list[str] = []
    others: list[str] = []
    while len(doomed_threads) < 5 or len(others) < 4:
        thread_id = processes.thread()
        (doomed_threads if partition_of(thread_id) == VICTIM else others).append(thread_id)
    threads = doomed_threads[:4] + others[:4]
    idle = doomed_threads[4]
    sender = Sender(processes, threads)
    sender.send(16)
    # It dies once some runs have completed and others stream on its partition, while
    # messages pour into it: the last 202s before its death are the ones at risk.
    wait_for(lambda: len(completed_runs(processes, threads)) >= 4)
    victim_thread = wait_for(lambda: streaming_thread(processes, doomed_threads[:4]))
    victim = doomed.master
    completed_before = completed_runs(processes, threads)
    with Flood(processes.base, doomed_threads[:4]) as flood:
        wait_for(lambda: flood.count() >= 20)
        killed_at = time.monotonic()
        doomed.die()
        flood.stop()
    before = {t: dict(runs) for t, runs in sender.accepted.items()}
    for thread_id, runs in flood.accepted_before(killed_at).items():
        before.setdefault(thread_id, {}).update(runs)
    # New messages to the partition that lost its master: refused (503) until its
    # replica is promoted, then accepted and answered.
    late = Sender(processes, [idle])
    while not late.accepted:
        late.send(1)
        assert time.monotonic() - killed_at < 30, "no 202 within 30 s of the kill"
    accepted_s = time.monotonic() - killed_at
    (late_thread, late_runs), *_ = late.accepted.items()
    processes.wait_runs_over([late_thread], 1, within=30)
    answered_s = time.monotonic() - killed_at
    sender.resend_refused()
    late.resend_refused()
    flood.resend_refused()
    accepted = {t: dict(runs) for t, runs in sender.accepted.items()}
    for more in (late.accepted, flood.accepted):
        for thread_id, runs in more.items():
            accepted.setdefault(thread_id, {}).update(runs)
    total_runs = sum(len(r) for r in accepted.values())
    wait_for(lambda: settled(processes, list(accepted)), within=60)

    losses = count_losses(processes, accepted, before, completed_before)
    fault = "host crash behind a 20 ms link" if doomed.link else "kill -9"
    report = (
        f"{fault} of master :{victim.port} mid-answer: 202s again after {accepted_s:.1f} s, "
        f"a new run answered after {answered_s:.1f} s; {losses}; "
        f"{sender.statuses[503] + late.statuses[503] + flood.refused} sends refused "
        "(503) meanwhile"
    )
    print(report)
    record_property("failover", report)
    # The promise: nothing acknowledged is lost, every run ends once with its whole text.
    assert losses.lost_messages == 0 and losses.lost_completions == 0, report
    assert losses.endings == Counter({1: total_runs}), report
    assert losses.wrong_texts == 0, report
    assert processes.view(late_thread)["runs"][next(iter(late_runs))]["status"] == "completed"

    # Its successor has no replica: the web process's promised writes there stand
    # unconfirmed, and /healthz says so.
    waits = processes.http.get("/healthz").json()["replica_wait"]
    assert waits["replicas"] == 1 and waits["unconfirmed"] > 0 and waits["outages"], waits
    # The killed node, started again, rejoins as the replica of its successor, and the
    # web process finds its promised writes acknowledged again.
    victim.start()
    own_cluster.wait_healthy()
    successor = own_cluster.master_of(KEYS.partition(victim_thread).thread(victim_thread))
    assert successor is not victim and own_cluster.replicas_of(successor) == [victim]
    web_log = tmp_path / "web.log"

    def acknowledged_again() -> bool:
        late.send(1)
        return not processes.http.get("/healthz").json()["replica_wait"]["outages"]

    wait_for(acknowledged_again, within=20, step=0.3)
    said = web_log.read_text(errors="replace")
    assert f":{successor.port}: 0 of 1 replicas acknowledged a write within" in said
    assert f"replicas of 127.0.0.1:{successor.port} acknowledge writes again" in said
    late.resend_refused()
    processes.wait_runs_over([late_thread], late.runs(), within=60)
    assert wait_for(lambda: healthy(processes))


# The whole system in this process, on the session's cluster.


@pytest.fixture
async def system(cluster_url: str, settings: Settings) -> AsyncIterator[System]:
    """Answers of 60 words, 20 ms apart: each streams for over a second."""
    backend = Backend.connect(cluster_url)
    slow = dataclasses.replace(settings, scripted_delay_ms=20, scripted_words=WORDS)
    try:
        async with running_system(backend, slow) as running:
            yield running
    finally:
        await backend.close()


@dataclasses.dataclass
class AsyncSender:
    """Sends with client ids; a refusal (503) is resent later with the same id."""

    system: System
    accepted: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    refused: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    sent: int = 0

    async def send(self, thread_id: str) -> None:
        content, client_id = f"question {self.sent}", f"c{self.sent}"
        self.sent += 1
        await self._post(thread_id, content, client_id)

    async def _post(self, thread_id: str, content: str, client_id: str) -> None:
        response = await self.system.http.post(
            f"/api/threads/{thread_id}/messages",
            json={"content": content, "client_id": client_id},
            timeout=10,
        )
        if response.status_code == 202:
            self.accepted.setdefault(thread_id, {})[response.json()["run_id"]] = content
            return
        assert response.status_code == 503, response.text
        self.refused.append((thread_id, content, client_id))

    async def resend_refused(self) -> None:
        pending, self.refused = self.refused, []
        for thread_id, content, client_id in pending:
            await self._post(thread_id, content, client_id)
        assert not self.refused, f"resends refused after the fault: {self.refused}"

    async def settle(self, within: float = 60) -> None:
        """Every accepted run ends exactly once, completed, with the reference text."""
        store = self.system.runtime.store

        async def over() -> bool:
            for thread_id, runs in self.accepted.items():
                view = await self.system.view(thread_id)
                if any(view["runs"][r]["status"] not in ("completed",) for r in runs):
                    return False
            return True

        try:
            await until(over, within=within)
        except TimeoutError:
            async with asyncio.timeout(10):  # say which runs, and how they stand
                left = {
                    run_id: (await self.system.view(thread_id))["runs"][run_id]
                    for thread_id, runs in self.accepted.items()
                    for run_id in runs
                }
            unfinished = {r: v for r, v in left.items() if v["status"] != "completed"}
            raise AssertionError(f"runs not completed within {within} s: {unfinished}") from None
        for thread_id, runs in self.accepted.items():
            events = [s.event for s in await store.read(thread_id)]
            ends = Counter(getattr(e, "run_id", "") for e in events if e.type in TERMINAL)
            assert all(ends[r] == 1 for r in runs), f"a run ended other than once: {ends}"
            view = await self.system.view(thread_id)
            for run_id, content in runs.items():
                reply_id = view["runs"][run_id]["reply_id"]
                reply = next(m for m in view["messages"] if m["id"] == reply_id)
                assert reply["content"] == scripted_reply(content, WORDS), run_id


async def a_streaming_thread(system: System, threads: list[str]) -> str:
    found = ""

    async def streaming() -> bool:
        nonlocal found
        for thread_id in threads:
            for message in (await system.view(thread_id))["messages"]:
                if message["status"] == "streaming" and message["content"]:
                    found = thread_id
                    return True
        return False

    await until(streaming, within=20)
    return found


def node_id(node: Node) -> str:
    with node.client() as client:
        return str(client.execute_command("CLUSTER", "MYID"))


def move_slot(cluster: Cluster, slot: int, target: Node) -> int:
    """Move `slot` to `target` key by key, as `redis-cli --cluster reshard` does, slowly:
    while it moves, some of the partition's keys are on each node (ASK, TRYAGAIN).
    Returns how many keys moved."""
    source = next(n for n in cluster.masters() if _serves(n, slot))
    source_id, target_id = node_id(source), node_id(target)
    moved = 0
    with source.client() as src, target.client() as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        try:
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 2):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
                time.sleep(0.02)  # paces the move: runs write while the slot is split
        finally:
            # The slot is the target's now; every master is told, as redis-cli does.
            for node in cluster.masters():
                with node.client() as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved


def _serves(node: Node, slot: int) -> bool:
    with node.client() as client:
        return any(
            int(s[0]) <= slot <= int(s[1]) and int(s[2][1]) == node.port
            for s in client.execute_command("CLUSTER", "SLOTS")
        )


async def test_a_partition_moved_to_another_master_while_answers_stream(
    system: System, redis_cluster: Cluster
) -> None:
    threads = [await system.new_thread() for _ in range(6)]
    sender = AsyncSender(system)
    for thread_id in threads:
        await sender.send(thread_id)
    thread_id = await a_streaming_thread(system, threads)
    key = KEYS.partition(thread_id).thread(thread_id)
    slot = key_slot(KEYS.partition(thread_id).tag.encode())
    before = redis_cluster.master_of(key)
    target = next(n for n in redis_cluster.masters() if n.port != before.port)
    moving = asyncio.create_task(asyncio.to_thread(move_slot, redis_cluster, slot, target))
    during = 0
    while not moving.done() and during < 12:  # more messages meanwhile, to every thread
        await sender.send(threads[during % len(threads)])
        during += 1
        await asyncio.sleep(0.05)  # spread over the move, not all queued at its start
    moved = await moving
    assert moved > 5, "the partition had few keys: the move proved little"
    assert redis_cluster.master_of(key).port == target.port
    await sender.resend_refused()
    for thread_id in threads:  # and after it
        await sender.send(thread_id)
    await sender.settle()
    redis_cluster.wait_healthy()


@pytest.mark.parametrize("pause_s", [1.0, 4.0], ids=["briefly", "past-the-node-timeout"])
async def test_a_master_paused_mid_answer(
    system: System, redis_cluster: Cluster, pause_s: float
) -> None:
    """Paused for less than the 2 s node timeout it is waited out; for longer, its
    replica takes over and it rejoins as a replica when it wakes. Either way every
    run ends once with its text, and the live socket opened before goes on."""
    threads = [await system.new_thread() for _ in range(6)]
    sender = AsyncSender(system)
    for n in range(12):
        await sender.send(threads[n % len(threads)])
    thread_id = await a_streaming_thread(system, threads)
    paused = redis_cluster.master_of(KEYS.partition(thread_id).thread(thread_id))
    async with connect(system.ws_url(thread_id)) as socket:
        assert orjson.loads(await socket.recv())["type"] == "snapshot"
        paused.pause()
        try:
            began = time.monotonic()
            while time.monotonic() - began < pause_s:
                await sender.send(thread_id)  # refused (503) or accepted elsewhere
        finally:
            paused.resume()
        await sender.resend_refused()
        last = list(sender.accepted[thread_id])[-1]
        async with asyncio.timeout(60):  # the socket's tail outlived the pause
            await frames_until(socket, "run.completed", last)
    await sender.settle()
    redis_cluster.wait_healthy()
