"""The processes of the Procfile and the embedded default, run for real."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from consumers.llm.scripted import scripted_reply
from service.embedded import free_port
from tests.processes import env_for, kill_pidfile, processes, spawn, wait_healthy

pytestmark = pytest.mark.slow


def wait_for_status(
    base: str, thread_id: str, run_id: str, statuses: set[str], within: float = 30
) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + within
    view: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        view = httpx.get(f"{base}/api/threads/{thread_id}", timeout=5).json()
        if view["runs"].get(run_id, {}).get("status") in statuses:
            return view
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {statuses}: {view.get('runs')}")


def chat(base: str, content: str) -> tuple[str, str]:
    thread_id = httpx.post(f"{base}/api/threads", json={}).json()["id"]
    accepted = httpx.post(f"{base}/api/threads/{thread_id}/messages", json={"content": content})
    assert accepted.status_code == 202, accepted.text
    return thread_id, accepted.json()["run_id"]


def test_embedded_restart_resumes_an_unfinished_run(tmp_path: Path) -> None:
    port = free_port()
    env = env_for(
        PORT=str(port),
        SLIPSTREAM_DATA_DIR=str(tmp_path / "data"),
        SLIPSTREAM_SCRIPTED_DELAY_MS="30",
        SLIPSTREAM_SCRIPTED_WORDS="150",
        SLIPSTREAM_LEASE_MS="1000",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with processes() as running:
            first = spawn("service", env, tmp_path / "first.log")
            running.append(first)
            health = wait_healthy(port, first)
            assert health["roles"] == ["web", "worker", "projector"]
            assert health["redis"] == "ok"
            thread_id, run_id = chat(base, "survive a crash")
            wait_for_status(base, thread_id, run_id, {"running"})
            os.kill(first.pid, signal.SIGKILL)  # mid-answer, no goodbye
            first.wait()

            second = spawn("service", env, tmp_path / "second.log")
            running.append(second)
            wait_healthy(port, second)
            view = wait_for_status(base, thread_id, run_id, {"completed", "failed"})
        assert view["runs"][run_id]["status"] == "completed"
        assert view["runs"][run_id]["attempt"] == 2
        assert view["messages"][-1]["content"] == scripted_reply("survive a crash", 150)
        assert "adopting the embedded redis-server" in (tmp_path / "second.log").read_text()
        assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()
    finally:
        kill_pidfile(tmp_path / "data" / "redis" / "redis.pid")


def test_without_redis_server_it_falls_back_to_fakeredis_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    env = env_for(PORT=str(port), PATH=str(empty_path), SLIPSTREAM_DATA_DIR=str(tmp_path / "d"))
    base = f"http://127.0.0.1:{port}"
    with processes() as running:
        process = spawn("service", env, tmp_path / "service.log")
        running.append(process)
        wait_healthy(port, process)
        thread_id, run_id = chat(base, "no redis here")
        view = wait_for_status(base, thread_id, run_id, {"completed"})
    assert view["messages"][-1]["content"] == scripted_reply("no redis here", 40)
    assert "NOTHING SURVIVES A RESTART" in (tmp_path / "service.log").read_text()


def test_procfile_roles_run_as_separate_processes(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = env_for(PORT=str(port), REDIS_URL=redis_url)
    base = f"http://127.0.0.1:{port}"
    with processes() as running:
        web = spawn("service", env, tmp_path / "web.log")
        workers = [spawn("consumers", env, tmp_path / f"worker{i}.log") for i in range(2)]
        running += [web, *workers, spawn("projections", env, tmp_path / "projector.log")]
        assert wait_healthy(port, web)["roles"] == ["web"]
        chats = [chat(base, f"question {i}") for i in range(6)]
        for i, (thread_id, run_id) in enumerate(chats):
            view = wait_for_status(base, thread_id, run_id, {"completed"})
            assert view["messages"][-1]["content"] == scripted_reply(f"question {i}", 40)
        events = httpx.get(f"{base}/api/threads/{chats[0][0]}/events").json()
        started = next(e["event"] for e in events if e["event"]["type"] == "run.started")
        _host, pid, nonce = started["worker"].split(":")
        assert int(pid) in {w.pid for w in workers} and len(nonce) == 16
        summaries = httpx.get(f"{base}/api/threads").json()
        assert {s["id"] for s in summaries} >= {t for t, _ in chats}


def test_roles_refuse_to_start_without_redis_url(tmp_path: Path) -> None:
    with processes() as running:
        worker = spawn("consumers", env_for(), tmp_path / "worker.log")
        running.append(worker)
        assert worker.wait(20) != 0
    assert "REDIS_URL is not set" in (tmp_path / "worker.log").read_text()


def test_sigterm_stops_the_embedded_redis_server_too(tmp_path: Path) -> None:
    port = free_port()
    env = env_for(PORT=str(port), SLIPSTREAM_DATA_DIR=str(tmp_path / "data"))
    pid_file = tmp_path / "data" / "redis" / "redis.pid"
    try:
        with processes() as running:
            service = spawn("service", env, tmp_path / "service.log")
            running.append(service)
            wait_healthy(port, service)
            redis_pid = int(pid_file.read_text())
            service.send_signal(signal.SIGTERM)
            service.wait(15)
        deadline = time.monotonic() + 10
        while _alive(redis_pid):
            assert time.monotonic() < deadline, "the embedded redis-server outlived its service"
            time.sleep(0.05)
    finally:
        kill_pidfile(pid_file)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of nobody still answers kill(0); it has exited all the same.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()
