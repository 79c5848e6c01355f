"""Kill every process and Redis itself; start them again; every workflow finishes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from consumers.llm.scripted import scripted_reply
from consumers.workflows.examples import analyze
from tests.ports import free_port
from tests.processes import env_for, processes, redis_with_aof, spawn, wait_healthy

pytestmark = pytest.mark.slow
WORDS = 80


def wait_run(
    http: httpx.Client, thread_id: str, run_id: str, done: set[str], within: float = 30
) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + within
    run: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        run = http.get(f"/api/threads/{thread_id}").json()["runs"][run_id]
        if run["status"] in done:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} stayed {run.get('status')}, wanted {done}")


def start(thread_http: httpx.Client, agent: str, content: str) -> tuple[str, str]:
    thread_id = thread_http.post("/api/threads", json={}).json()["id"]
    accepted = thread_http.post(
        f"/api/threads/{thread_id}/messages", json={"content": content, "agent": agent}
    )
    assert accepted.status_code == 202, accepted.text
    return thread_id, accepted.json()["run_id"]


def test_every_workflow_resumes_after_everything_restarts(tmp_path: Path) -> None:
    redis_port, web_port = free_port(), free_port()
    env = env_for(
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        PORT=str(web_port),
        SLIPSTREAM_LEASE_MS="1000",
        SLIPSTREAM_SCRIPTED_WORDS=str(WORDS),
        SLIPSTREAM_SCRIPTED_DELAY_MS="40",
    )
    roles = [
        ("service", "web"),
        ("consumers", "worker1"),
        ("consumers", "worker2"),
        ("projections", "projector"),
    ]
    http = httpx.Client(base_url=f"http://127.0.0.1:{web_port}", timeout=10)
    with redis_with_aof(tmp_path / "redis", redis_port) as redis, processes() as running:
        running += [spawn(module, env, tmp_path / f"{name}-1.log") for module, name in roles]
        wait_healthy(web_port, running[0])
        approval = start(http, "approval", "Announce the release")
        wait_run(http, *approval, {"waiting"})
        reminder = start(http, "reminder", "in 10 seconds: stretch")
        wait_run(http, *reminder, {"waiting"})
        research = start(http, "research", "Why do streams need consumer groups?")

        def generating() -> bool:
            run = http.get(f"/api/threads/{research[0]}").json()["runs"][research[1]]
            return any(s["name"] == "generate" and s["status"] == "running" for s in run["steps"])

        deadline = time.monotonic() + 20
        while not generating():
            assert time.monotonic() < deadline, "research never reached its generate step"
            time.sleep(0.02)

        for process in [*running, redis]:  # everything, at once, no goodbyes
            os.kill(process.pid, signal.SIGKILL)
        for process in [*running, redis]:
            process.wait()
        running.clear()

    with redis_with_aof(tmp_path / "redis", redis_port), processes() as running:
        running += [spawn(module, env, tmp_path / f"{name}-2.log") for module, name in roles]
        wait_healthy(web_port, running[0])
        signalled = http.post(
            f"/api/runs/{approval[1]}/signal",
            json={"name": "approval", "payload": {"approved": True}},
        )
        assert signalled.status_code == 202, signalled.text
        approved = wait_run(http, *approval, {"completed", "failed"})
        reminded = wait_run(http, *reminder, {"completed", "failed"})
        researched = wait_run(http, *research, {"completed", "failed"})
        research_view = http.get(f"/api/threads/{research[0]}").json()
        reminder_view = http.get(f"/api/threads/{reminder[0]}").json()
        reminder_events = http.get(f"/api/threads/{reminder[0]}/events").json()
    http.close()
    assert approved["status"] == "completed" and approved["result"]["status"] == "published"
    assert reminded["status"] == "completed"
    assert reminder_view["messages"][-1]["content"] == "Reminder: stretch"
    due = next(
        e["event"]["until_ms"] for e in reminder_events if e["event"]["type"] == "run.waiting"
    )
    woke = next(
        int(e["id"].split("-")[0]) for e in reminder_events if e["event"]["type"] == "run.resumed"
    )
    assert 0 <= woke - due < 1000, f"the timer fired {woke - due} ms after it was due"
    assert researched["status"] == "completed"
    question = "Why do streams need consumer groups?"
    prompt = f"{question}\n\nCover these topics: {', '.join(analyze(question).topics)}."
    assert research_view["messages"][-1]["content"] == scripted_reply(prompt, WORDS)
    assert [s["name"] for s in researched["steps"]] == ["analyze", "generate", "finalize"]
    assert [s["attempts"] for s in researched["steps"]][1] == 2  # generate ran again, once
