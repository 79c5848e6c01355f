"""Real Slipstream processes for tests that kill them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import subprocess_env
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


def spawn(
    module: str,
    env: dict[str, str],
    log: Path,
    *args: str,
    python: str = sys.executable,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [python, "-m", module, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def exits_within(process: subprocess.Popen[bytes], seconds: float) -> int:
    """The process's exit status; fails the test if it is still running after `seconds`."""
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pid {process.pid} still running after {seconds}s") from None


def wait_for_log(
    log: Path, text: str, process: subprocess.Popen[bytes], within: float = 20
) -> None:
    deadline = time.monotonic() + within
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode} before logging {text!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged within {within}s")
        time.sleep(0.02)


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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of nobody still answers kill(0); it has exited all the same.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def gone_within(pid: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still running after {seconds}s"
        time.sleep(0.02)


def wait_healthy(port: int, process: subprocess.Popen[bytes], within: float = 30) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} before it was healthy")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if response.status_code == 200:
                body: dict = response.json()  # type: ignore[type-arg]
                return body
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no healthy answer on port {port} within {within}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            stop(process)


def kill_pidfile(path: Path) -> None:
    """Stop a redis-server an embedded process left behind when it was killed."""
    if path.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(path.read_text()), signal.SIGKILL)


def env_for(**extra: str) -> dict[str, str]:
    return subprocess_env(**extra)


@contextmanager
def redis_with_aof(workdir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server that writes every command to its AOF before answering."""
    with redis_process(workdir, port, "--appendonly", "yes", "--appendfsync", "always") as made:
        yield made


@contextmanager
def redis_process(workdir: Path, port: int, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of a test's own on `port`, answering when this yields; killed after."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    process = subprocess.Popen([*command, "--save", "", *options], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not redis_answers(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("redis-server did not start")
            time.sleep(0.02)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a test may have left it paused
            process.kill()
            process.wait()


def redis_answers(port: int) -> bool:
    import redis

    client = redis.Redis(port=port, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return True  # one started with --requirepass: it answers, to those who know it
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextmanager
def embedded_service(workdir: Path, **env: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The embedded system (its own redis-server) on a free port: its URL and environment."""
    port = free_port()
    full = env_for(PORT=str(port), SLIPSTREAM_DATA_DIR=str(workdir / "data"), **env)
    process = spawn("service", full, workdir / "service.log")
    try:
        wait_healthy(port, process)
        yield f"http://127.0.0.1:{port}", full
    finally:
        stop(process)
        kill_pidfile(workdir / "data" / "redis" / "redis.pid")
