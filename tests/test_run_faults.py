"""Runs survive their workers: kill -9, SIGSTOP zombies, chaos, SIGTERM hand-back.

Real processes on a real Redis: a web process, a projector and several
`python -m consumers`, with a short lease so takeovers happen in seconds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from consumers.llm.scripted import scripted_reply
from tests.ports import free_port
from tests.processes import env_for, spawn, stop, wait_healthy

pytestmark = pytest.mark.slow

WORDS = 60
TERMINAL = ("run.completed", "run.cancelled", "run.failed")


class Cluster:
    """Web, projector and workers as separate processes sharing one Redis."""

    def __init__(self, redis_url: str, logs: Path, **env: str) -> None:
        self.port = free_port()
        settings = {
            "REDIS_URL": redis_url,
            "PORT": str(self.port),
            "SLIPSTREAM_LEASE_MS": "1000",
            "SLIPSTREAM_SCRIPTED_WORDS": str(WORDS),
            "SLIPSTREAM_SCRIPTED_DELAY_MS": "20",
        }
        self.env = env_for(**(settings | env))
        self.logs = logs
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.base, timeout=10)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.others: list[subprocess.Popen[bytes]] = []
        self._started = 0

    def start(self, workers: int) -> None:
        web = spawn("service", self.env, self.logs / "web.log")
        self.others += [web, spawn("projections", self.env, self.logs / "projector.log")]
        wait_healthy(self.port, web)
        for _ in range(workers):
            self.add_worker()

    def add_worker(self) -> subprocess.Popen[bytes]:
        self._started += 1
        worker = spawn("consumers", self.env, self.logs / f"worker{self._started}.log")
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for process in self.workers + self.others:
            stop(process)
        self.http.close()

    def ask(self, thread_id: str, content: str) -> str:
        response = self.http.post(f"/api/threads/{thread_id}/messages", json={"content": content})
        assert response.status_code == 202, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    def thread(self) -> str:
        thread_id: str = self.http.post("/api/threads", json={}).json()["id"]
        return thread_id

    def events(self, thread_id: str) -> list[dict]:  # type: ignore[type-arg]
        return [
            e["event"] | {"_id": e["id"]}
            for e in self.http.get(
                f"/api/threads/{thread_id}/events", params={"limit": 10000}
            ).json()
        ]

    def view(self, thread_id: str) -> dict:  # type: ignore[type-arg]
        view: dict = self.http.get(f"/api/threads/{thread_id}").json()  # type: ignore[type-arg]
        return view

    def wait_runs_over(self, threads: list[str], runs: int, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            ended = sum(
                1
                for t in threads
                for r in self.view(t)["runs"].values()
                if r["status"] in ("completed", "cancelled", "failed")
            )
            if ended == runs:
                return
            time.sleep(0.1)
        raise AssertionError(f"only {ended} of {runs} runs ended within {within}s")

    def running_on(self, thread_id: str, run_id: str) -> str | None:
        """The worker name streaming the run now, once it has written a delta."""
        events = self.events(thread_id)
        started = [e for e in events if e["type"] == "run.started" and e["run_id"] == run_id]
        if started and any(e["type"] == "message.delta" for e in events):
            worker: str = started[-1]["worker"]
            return worker
        return None


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(redis_url, tmp_path)
    try:
        yield made
    finally:
        made.close()


def pid_of(worker_name: str) -> int:
    return int(worker_name.split(":")[1])


def wait_for(condition, within: float = 20, step: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def check_thread(cluster: Cluster, thread_id: str, prompts: dict[str, str]) -> Counter[str]:
    """Every run ends once; each attempt's deltas are in order; texts match the reference."""
    events = cluster.events(thread_id)
    endings: Counter[str] = Counter()
    deltas: dict[tuple[str, int], list[int]] = defaultdict(list)
    for event in events:
        if event["type"] in TERMINAL:
            endings[event["run_id"]] += 1
        if event["type"] == "message.delta":
            deltas[(event["run_id"], event["attempt"])].append(event["seq"])
    assert set(endings) == set(prompts), "a run has no end"
    assert all(n == 1 for n in endings.values()), f"a run ended twice: {endings}"
    for key, seqs in deltas.items():
        assert seqs == list(range(1, len(seqs) + 1)), f"deltas of {key} out of order: {seqs}"
    sent = [e["content"] for e in events if e["type"] == "message.sent"]
    assert sorted(sent) == sorted(prompts.values()), "a user message was lost"
    view = cluster.view(thread_id)
    outcomes: Counter[str] = Counter()
    for run_id, prompt in prompts.items():
        run = view["runs"][run_id]
        outcomes[run["status"]] += 1
        reply = next(m for m in view["messages"] if m["id"] == run["reply_id"])
        if run["status"] == "completed":
            assert reply["content"] == scripted_reply(prompt, WORDS), f"{run_id} text differs"
    return outcomes


def test_kill_9_mid_answer_loses_nothing(cluster: Cluster) -> None:
    cluster.start(workers=3)
    threads = [cluster.thread() for _ in range(10)]
    prompts: dict[str, dict[str, str]] = {t: {} for t in threads}
    for i in range(30):
        thread_id = threads[i % len(threads)]
        content = f"question {i}"
        prompts[thread_id][cluster.ask(thread_id, content)] = content
    first_thread, first_run = threads[0], next(iter(prompts[threads[0]]))
    victim = wait_for(lambda: cluster.running_on(first_thread, first_run))
    os.kill(pid_of(victim), signal.SIGKILL)
    cluster.wait_runs_over(threads, 30, within=90)
    totals: Counter[str] = Counter()
    for thread_id in threads:
        totals += check_thread(cluster, thread_id, prompts[thread_id])
    assert totals == Counter(completed=30)
    attempts = [e["attempt"] for e in cluster.events(first_thread) if e["type"] == "run.started"]
    assert 2 in attempts, "the killed worker's run was not taken over"


def test_a_paused_worker_writes_nothing_after_waking(cluster: Cluster) -> None:
    cluster.start(workers=2)
    thread_id = cluster.thread()
    run_id = cluster.ask(thread_id, "pause the worker")
    zombie = wait_for(lambda: cluster.running_on(thread_id, run_id))
    os.kill(pid_of(zombie), signal.SIGSTOP)
    try:
        heir = wait_for(
            lambda: next(
                (
                    e["worker"]
                    for e in cluster.events(thread_id)
                    if e["type"] == "run.started" and e["attempt"] == 2
                ),
                None,
            )
        )
    finally:
        os.kill(pid_of(zombie), signal.SIGCONT)
    assert heir != zombie
    cluster.wait_runs_over([thread_id], 1, within=30)
    events = cluster.events(thread_id)
    takeover = next(
        i for i, e in enumerate(events) if e["type"] == "run.started" and e["attempt"] == 2
    )
    late = [e for e in events[takeover:] if e.get("attempt") == 1 and e["type"] == "message.delta"]
    assert late == [], "the woken worker wrote after the takeover"
    check_thread(cluster, thread_id, {run_id: "pause the worker"})
    zombie_log = next(
        p for p in cluster.logs.glob("worker*.log") if f":{pid_of(zombie)}:" in p.read_text()
    )
    # The woken worker finds its lease gone at its next renewal or write, which may
    # come after the heir has finished the run.
    wait_for(lambda: "lease lost" in zombie_log.read_text(), within=10)


def test_sigterm_hands_the_run_back_at_once(redis_url: str, tmp_path: Path) -> None:
    cluster = Cluster(redis_url, tmp_path, SLIPSTREAM_LEASE_MS="60000")
    try:
        cluster.start(workers=1)
        thread_id = cluster.thread()
        run_id = cluster.ask(thread_id, "hand it over")
        leaving = cluster.workers[0]
        wait_for(lambda: cluster.running_on(thread_id, run_id))
        began = time.monotonic()
        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(5) == 0
        exit_s = time.monotonic() - began
        cluster.add_worker()
        cluster.wait_runs_over([thread_id], 1, within=30)
        total_s = time.monotonic() - began
        check_thread(cluster, thread_id, {run_id: "hand it over"})
    finally:
        cluster.close()
    assert exit_s < 3
    assert total_s < 20, "the run waited for the 60 s lease instead of being handed back"


def test_chaos_every_run_ends_exactly_once(cluster: Cluster) -> None:
    rng = random.Random(2026)
    cluster.start(workers=3)
    threads = [cluster.thread() for _ in range(20)]
    prompts: dict[str, dict[str, str]] = {t: {} for t in threads}
    deadline = time.monotonic() + 35
    sent = kills = 0
    while time.monotonic() < deadline or sent < 100:
        for _ in range(4):
            if sent < 100:
                thread_id = rng.choice(threads)
                content = f"chaos {sent}"
                prompts[thread_id][cluster.ask(thread_id, content)] = content
                sent += 1
        if time.monotonic() < deadline:
            victim = rng.choice([w for w in cluster.workers if w.poll() is None])
            victim.kill()
            victim.wait()
            kills += 1
            cluster.add_worker()
        time.sleep(rng.uniform(0.5, 1.5))
    cluster.wait_runs_over(threads, 100, within=120)
    totals: Counter[str] = Counter()
    for thread_id in threads:
        totals += check_thread(cluster, thread_id, {r: c for r, c in prompts[thread_id].items()})
    assert sum(totals.values()) == 100
    assert kills >= 10
    # A run whose worker is killed five times fails, on purpose: that is rare here.
    assert totals["completed"] >= 95, totals
