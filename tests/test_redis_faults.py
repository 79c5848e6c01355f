"""Redis faults while runs stream: every accepted run ends once, with the reference text.

Real processes (web, projector, two workers) on a real redis-server that
writes every command to its AOF before answering. Each test breaks Redis
the way operators see it break, while answers are streaming:
- `CLIENT KILL TYPE normal`: every connection of every process dropped;
- kill -9 and a restart three seconds later from the AOF;
- SIGSTOP for ten seconds (a Redis that hangs), then SIGCONT.
Sends during the fault must get a prompt 503, never hang; a sender resends
those with the same client id afterwards, as a client should, and nothing
is written twice. At the end every run reached exactly one terminal event,
and every answer is exactly the scripted model's reference text.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from tests.ports import free_port
from tests.processes import redis_with_aof
from tests.test_run_faults import Cluster, check_thread, wait_for

pytestmark = pytest.mark.slow

PROMPT_TIMEOUT_S = 1.5  # what "a prompt 503" means here: the API's 0.75 s plus slack


@dataclass
class Sender:
    """Sends messages with client ids; keeps what was accepted and what must be resent."""

    cluster: Cluster
    threads: list[str]
    accepted: dict[str, dict[str, str]] = field(default_factory=dict)
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    slowest_refusal_s: float = 0.0
    sent: int = 0

    def send(self, count: int) -> None:
        for _ in range(count):
            thread_id = self.threads[self.sent % len(self.threads)]
            content, client_id = f"question {self.sent}", f"c{self.sent}"
            self.sent += 1
            self._post(thread_id, content, client_id, first=True)

    def resend_refused(self) -> None:
        pending, self.refused = self.refused, []
        for thread_id, content, client_id in pending:
            self._post(thread_id, content, client_id, first=False)
        assert not self.refused, f"resends refused after the fault: {self.refused}"

    def _post(self, thread_id: str, content: str, client_id: str, *, first: bool) -> None:
        began = time.monotonic()
        try:
            response = self.cluster.http.post(
                f"/api/threads/{thread_id}/messages",
                json={"content": content, "client_id": client_id},
                timeout=5,
            )
        except httpx.TimeoutException as exc:
            raise AssertionError(f"a send hung for {time.monotonic() - began:.1f} s") from exc
        took = time.monotonic() - began
        if first:
            self.statuses[response.status_code] += 1
        if response.status_code == 202:
            self.accepted.setdefault(thread_id, {})[response.json()["run_id"]] = content
            return
        assert response.status_code == 503, response.text
        assert "Redis is unavailable" in response.json()["detail"]
        self.slowest_refusal_s = max(self.slowest_refusal_s, took)
        self.refused.append((thread_id, content, client_id))

    def runs(self) -> int:
        return sum(len(runs) for runs in self.accepted.values())


@dataclass
class Faulty:
    """A redis-server on a fixed port that can be killed and started again on its AOF."""

    workdir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


@contextmanager
def faulty_redis(tmp_path: Path) -> Iterator[Faulty]:
    faulty = Faulty(tmp_path / "redis", free_port())
    with redis_with_aof(faulty.workdir, faulty.port) as process:
        faulty.process = process
        try:
            yield faulty
        finally:
            if faulty.process is not None and faulty.process.poll() is None:
                faulty.process.send_signal(signal.SIGCONT)
                faulty.process.kill()
                faulty.process.wait()


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[Faulty]:
    with faulty_redis(tmp_path) as made:
        yield made


@pytest.fixture
def system(faulty: Faulty, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(faulty.url, tmp_path)
    try:
        made.start(workers=2)
        yield made
    finally:
        made.close()


def streaming(cluster: Cluster, sender: Sender) -> bool:
    """Some answer has written text and not finished: the fault hits mid-answer."""
    for thread_id in sender.accepted:
        for message in cluster.view(thread_id)["messages"]:
            if message["status"] == "streaming" and message["content"]:
                return True
    return False


def settle(cluster: Cluster, sender: Sender) -> Counter[str]:
    """Wait for every accepted run to end; check each ended once, with the reference text."""
    threads = list(sender.accepted)
    cluster.wait_runs_over(threads, sender.runs(), within=90)
    outcomes: Counter[str] = Counter()
    for thread_id in threads:
        outcomes += check_thread(cluster, thread_id, sender.accepted[thread_id])
    return outcomes


def healthy(cluster: Cluster) -> bool:
    try:
        return cluster.http.get("/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_client_kill_drops_every_connection_and_nothing_is_lost(
    system: Cluster, faulty: Faulty
) -> None:
    sender = Sender(system, [system.thread() for _ in range(6)])
    sender.send(12)
    wait_for(lambda: streaming(system, sender))
    with faulty.client() as admin:
        for _ in range(3):
            assert int(admin.execute_command("CLIENT", "KILL", "TYPE", "normal")) > 0
            sender.send(4)
            wait_for(lambda: streaming(system, sender))
    sender.resend_refused()
    assert settle(system, sender) == Counter(completed=sender.runs())
    assert sender.runs() == 24
    wait_for(lambda: healthy(system))


def test_redis_killed_and_restarted_from_its_aof(system: Cluster, faulty: Faulty) -> None:
    sender = Sender(system, [system.thread() for _ in range(6)])
    sender.send(12)
    wait_for(lambda: streaming(system, sender))
    assert faulty.process is not None
    faulty.process.kill()
    faulty.process.wait()
    down_at = time.monotonic()
    health = system.http.get("/healthz", timeout=5)
    assert health.status_code == 503
    assert health.json()["redis"].startswith("unreachable")
    sender.send(6)  # while it is down: each a prompt 503
    assert sender.statuses[503] == 6
    time.sleep(max(0.0, 3 - (time.monotonic() - down_at)))  # Redis stays down three seconds
    with redis_with_aof(faulty.workdir, faulty.port) as restarted:
        faulty.process = restarted
        wait_for(lambda: healthy(system), within=30)
        sender.resend_refused()
        assert settle(system, sender) == Counter(completed=sender.runs())
        # One outage: a process says when it began and when it ended, not once per
        # retry, per loop (a dozen and more each) or per run it cut short. (A worker
        # still starting says it with its start-up check instead; the web process has
        # no loop reading Redis here, with no socket open.)
        told = Counter[str]()
        for name in ("projector", "worker1", "worker2", "web"):
            said = (system.logs / f"{name}.log").read_text(errors="replace").splitlines()
            began = [line for line in said if "Redis fault" in line]
            ended = [line for line in said if "working again" in line]
            assert len(began) == len(ended) <= 1, (name, began, ended)
            told[name[:6]] += len(began)
        assert told == Counter(projec=1, worker=told["worker"]) and told["worker"] >= 1
    assert sender.runs() == 18
    assert sender.slowest_refusal_s < PROMPT_TIMEOUT_S


def test_redis_paused_for_ten_seconds(system: Cluster, faulty: Faulty) -> None:
    sender = Sender(system, [system.thread() for _ in range(6)])
    sender.send(12)
    wait_for(lambda: streaming(system, sender))
    assert faulty.process is not None
    os.kill(faulty.process.pid, signal.SIGSTOP)
    paused_at = time.monotonic()
    try:
        began = time.monotonic()
        health = system.http.get("/healthz", timeout=5)
        health_s = time.monotonic() - began
        sender.send(4)  # while it hangs: each a prompt 503
        time.sleep(max(0.0, 10 - (time.monotonic() - paused_at)))  # paused for ten seconds
    finally:
        os.kill(faulty.process.pid, signal.SIGCONT)
    assert health.status_code == 503
    assert health_s < PROMPT_TIMEOUT_S
    assert sender.statuses[503] == 4
    assert sender.slowest_refusal_s < PROMPT_TIMEOUT_S
    wait_for(lambda: healthy(system), within=30)
    # A send that timed out may still have been applied once Redis woke: the
    # resend with its client id finds it and writes nothing more.
    sender.resend_refused()
    assert settle(system, sender) == Counter(completed=sender.runs())
    assert sender.runs() == 16
