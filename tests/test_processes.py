"""The processes of the Procfile and the embedded default, run for real."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from consumers.llm.scripted import scripted_reply
from service.embedded import START_TIMEOUT_S
from slipstream.process import STOP_GRACE_S
from tests.ports import free_port
from tests.processes import (
    chat,
    env_for,
    exits_within,
    gone_within,
    kill_pidfile,
    pid_alive,
    processes,
    redis_with_aof,
    spawn,
    wait_for_log,
    wait_for_status,
    wait_healthy,
)

pytestmark = pytest.mark.slow


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
        gone_within(redis_pid)
    finally:
        kill_pidfile(pid_file)


def test_a_second_start_on_a_taken_port_or_data_dir_exits_at_once(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = env_for(PORT=str(port), SLIPSTREAM_DATA_DIR=str(data))
    try:
        with processes() as running:
            first = spawn("service", env, tmp_path / "first.log")
            running.append(first)
            wait_healthy(port, first)
            redis_pid = int((data / "redis" / "redis.pid").read_text())

            second = spawn("service", env, tmp_path / "second.log")
            running.append(second)
            assert exits_within(second, 5) == 1
            assert (tmp_path / "second.log").read_text().splitlines() == [
                f"slipstream: cannot listen on 127.0.0.1:{port}: address already in use"
            ]

            other_port = env_for(PORT=str(free_port()), SLIPSTREAM_DATA_DIR=str(data))
            third = spawn("service", other_port, tmp_path / "third.log")
            running.append(third)
            assert exits_within(third, 5) == 1
            assert (tmp_path / "third.log").read_text().splitlines() == [
                f"slipstream: the data dir {data} is in use by another Slipstream "
                f"(pid {first.pid}); stop that one, or give this one its own SLIPSTREAM_DATA_DIR"
            ]

            # The first kept its redis-server and its roles.
            assert pid_alive(redis_pid)
            thread_id, run_id = chat(f"http://127.0.0.1:{port}", "still mine")
            wait_for_status(f"http://127.0.0.1:{port}", thread_id, run_id, {"completed"})
            first.send_signal(signal.SIGINT)
            assert exits_within(first, 10) == 0  # a stop within its grace, on a loaded machine too
        gone_within(redis_pid)
    finally:
        kill_pidfile(data / "redis" / "redis.pid")


def test_a_port_that_cannot_be_bound_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        env = env_for(PORT=str(port), SLIPSTREAM_DATA_DIR=str(data))
        with processes() as running:
            service = spawn("service", env, tmp_path / "service.log")
            running.append(service)
            assert exits_within(service, 5) == 1
    assert (tmp_path / "service.log").read_text().splitlines() == [
        f"slipstream: cannot listen on 127.0.0.1:{port}: address already in use"
    ]
    assert not data.exists(), "the data dir (and a redis-server) were started before the bind"


def _fake_redis_server(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir()
    script = bin_dir / "redis-server"
    script.write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --logfile ] && log=$2; shift; done\n' + body
    )
    script.chmod(0o755)


def test_a_redis_server_that_will_not_start_ends_the_start_with_its_reason(
    tmp_path: Path,
) -> None:
    _fake_redis_server(
        tmp_path / "bin", 'echo "Fatal error, can\'t open config file" > "$log"\nexit 1\n'
    )
    env = env_for(
        PORT=str(free_port()),
        SLIPSTREAM_DATA_DIR=str(tmp_path / "data"),
        PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
    )
    with processes() as running:
        service = spawn("service", env, tmp_path / "service.log")
        running.append(service)
        assert exits_within(service, 10) == 1
    lines = (tmp_path / "service.log").read_text().splitlines()
    log = tmp_path / "data" / "redis" / "redis.log"
    assert lines == [
        f"slipstream: redis-server exited with status 1: Fatal error, can't open config file "
        f"({log})"
    ]


def test_a_redis_server_that_never_answers_is_stopped_with_the_start(tmp_path: Path) -> None:
    pid_file = tmp_path / "hung.pid"
    _fake_redis_server(tmp_path / "bin", f"echo $$ > {pid_file}\nexec sleep 60\n")
    env = env_for(
        PORT=str(free_port()),
        SLIPSTREAM_DATA_DIR=str(tmp_path / "data"),
        PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
    )
    with processes() as running:
        service = spawn("service", env, tmp_path / "service.log")
        running.append(service)
        assert exits_within(service, START_TIMEOUT_S + 5) == 1
    assert (
        (tmp_path / "service.log")
        .read_text()
        .splitlines()[-1]
        .startswith("slipstream: redis-server did not answer on port ")
    )
    gone_within(int(pid_file.read_text()), 2)


def test_bad_configuration_is_one_line(tmp_path: Path) -> None:
    env = env_for(PORT=str(free_port()), SLIPSTREAM_PARTITIONS="many")
    with processes() as running:
        service = spawn("service", env, tmp_path / "service.log")
        running.append(service)
        assert exits_within(service, 10) == 1
    assert (tmp_path / "service.log").read_text().splitlines() == [
        "configuration error: SLIPSTREAM_PARTITIONS='many' is not a whole number"
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_each_separate_role_stops_on_a_signal_and_hands_its_run_back(
    redis_url: str, tmp_path: Path, sig: signal.Signals
) -> None:
    port = free_port()
    env = env_for(PORT=str(port), REDIS_URL=redis_url, SLIPSTREAM_SCRIPTED_DELAY_MS="50")
    base = f"http://127.0.0.1:{port}"
    with processes() as running:
        web = spawn("service", env, tmp_path / "web.log")
        worker = spawn("consumers", env, tmp_path / "worker.log")
        projector = spawn("projections", env, tmp_path / "projector.log")
        running += [web, worker, projector]
        wait_healthy(port, web)
        wait_for_log(tmp_path / "projector.log", "folding", projector)
        thread_id, run_id = chat(base, "hold this one")
        wait_for_status(base, thread_id, run_id, {"running"})
        for process in (worker, projector, web):
            process.send_signal(sig)
        for process in (worker, projector, web):
            assert exits_within(process, 5) == 0
    assert f"run {run_id} handed back" in (tmp_path / "worker.log").read_text()


def test_embedded_sigint_stops_every_role_and_the_redis_server(tmp_path: Path) -> None:
    port = free_port()
    pid_file = tmp_path / "data" / "redis" / "redis.pid"
    env = env_for(
        PORT=str(port),
        SLIPSTREAM_DATA_DIR=str(tmp_path / "data"),
        SLIPSTREAM_SCRIPTED_DELAY_MS="50",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with processes() as running:
            service = spawn("service", env, tmp_path / "service.log")
            running.append(service)
            wait_healthy(port, service)
            redis_pid = int(pid_file.read_text())
            thread_id, run_id = chat(base, "hold this one")
            wait_for_status(base, thread_id, run_id, {"running"})
            service.send_signal(signal.SIGINT)
            assert exits_within(service, 5) == 0
        gone_within(redis_pid)
        assert f"run {run_id} handed back" in (tmp_path / "service.log").read_text()
    finally:
        kill_pidfile(pid_file)


def test_a_second_signal_ends_a_stop_that_hangs(tmp_path: Path) -> None:
    """The embedded redis-server paused: the roles cannot finish stopping."""
    port = free_port()
    pid_file = tmp_path / "data" / "redis" / "redis.pid"
    env = env_for(PORT=str(port), SLIPSTREAM_DATA_DIR=str(tmp_path / "data"))
    log = tmp_path / "service.log"
    redis_pid = 0
    try:
        with processes() as running:
            service = spawn("service", env, log)
            running.append(service)
            wait_healthy(port, service)
            redis_pid = int(pid_file.read_text())
            os.kill(redis_pid, signal.SIGSTOP)
            service.send_signal(signal.SIGTERM)
            wait_for_log(log, "SIGTERM: stopping", service)
            service.send_signal(signal.SIGTERM)
            assert exits_within(service, 5) == 1
        assert log.read_text().splitlines()[-1] == "slipstream: SIGTERM again: stopping at once"
        os.kill(redis_pid, signal.SIGCONT)  # it was told to stop, and does once it runs
        gone_within(redis_pid)
    finally:
        if redis_pid:
            os.kill(redis_pid, signal.SIGCONT)
        kill_pidfile(pid_file)


def test_a_worker_on_a_paused_redis_still_stops_promptly(tmp_path: Path) -> None:
    redis_port = free_port()
    log = tmp_path / "worker.log"
    with redis_with_aof(tmp_path / "redis", redis_port) as paused:
        env = env_for(REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
        with processes() as running:
            worker = spawn("consumers", env, log)
            running.append(worker)
            wait_for_log(log, "taking work from", worker)
            paused.send_signal(signal.SIGSTOP)
            try:
                worker.send_signal(signal.SIGTERM)
                wait_for_log(log, "SIGTERM: stopping", worker)
                # Its loops give up on the hung Redis after their grace, well before ours.
                assert exits_within(worker, STOP_GRACE_S / 2) == 0
            finally:
                paused.send_signal(signal.SIGCONT)


def test_a_stop_that_hangs_ends_after_the_grace_period(tmp_path: Path) -> None:
    log = tmp_path / "stuck.log"
    with processes() as running:
        stuck = spawn("tests.stuck_role", env_for(), log)
        running.append(stuck)
        wait_for_log(log, "stuck role running", stuck)
        stuck.send_signal(signal.SIGTERM)
        wait_for_log(log, "SIGTERM: stopping", stuck)
        assert exits_within(stuck, STOP_GRACE_S + 3) == 1
    assert log.read_text().splitlines()[-1] == (
        f"worker: still stopping after {STOP_GRACE_S:g} s: stopping at once"
    )


def test_a_left_redis_server_that_does_not_answer_is_named_not_shared(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    pid_file = data / "redis" / "redis.pid"
    env = env_for(PORT=str(port), SLIPSTREAM_DATA_DIR=str(data))
    redis_pid = 0
    try:
        with processes() as running:
            first = spawn("service", env, tmp_path / "first.log")
            running.append(first)
            wait_healthy(port, first)
            first.kill()
            first.wait()
            redis_pid = int(pid_file.read_text())
            os.kill(redis_pid, signal.SIGSTOP)

            second = spawn("service", env, tmp_path / "second.log")
            running.append(second)
            assert exits_within(second, START_TIMEOUT_S + 10) == 1
        assert (tmp_path / "second.log").read_text().splitlines()[-1] == (
            f"slipstream: the redis-server left running on {data / 'redis'} (pid {redis_pid}) "
            f"does not answer on port {(data / 'redis' / 'port').read_text()}; "
            f"stop it (kill {redis_pid}) and start again"
        )
        assert pid_alive(redis_pid), "it was not ours to stop"
    finally:
        if redis_pid:
            os.kill(redis_pid, signal.SIGCONT)
        kill_pidfile(pid_file)
