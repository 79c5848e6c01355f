"""Per-user limits over real HTTP and sockets: each refuses with 429 / a close code,
appends nothing, is counted, and holds across web processes (it lives in Redis)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.app import MAX_BODY_BYTES
from service.limits import LimitReached
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, running_system
from tests.waits import until


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def stream_length(system: System, thread_id: str) -> int:
    view = await system.runtime.views.current(thread_id)
    length: int = await system.runtime.backend.client.xlen(view.stream_key)
    return length


async def test_sends_a_minute_hold_across_web_processes(
    real_backend: Backend, settings: Settings
) -> None:
    limited = dataclasses.replace(settings, auth="tokens", sends_per_minute=3)
    async with (
        running_system(real_backend, limited, workers=False) as one,
        running_system(real_backend, limited, workers=False) as two,
    ):
        alice = await one.runtime.auth.users.add("alice-sends")
        bob = await one.runtime.auth.users.add("bob-sends")
        thread = await one.http.post("/api/threads", json={}, headers=bearer(alice))
        t = thread.json()["id"]
        await one.http.post(
            f"/api/threads/{t}/members", json={"user": "bob-sends"}, headers=bearer(alice)
        )
        message = {"content": "hi", "agent": "assistant"}
        for system in (one, two, one):  # three sends, through both processes
            sent = await system.http.post(
                f"/api/threads/{t}/messages", json=message, headers=bearer(alice)
            )
            assert sent.status_code == 202, sent.text
        before = await stream_length(one, t)
        refused = await two.http.post(
            f"/api/threads/{t}/messages", json=message, headers=bearer(alice)
        )
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "alice-sends sent 3 messages within a minute" in refused.json()["detail"]
        assert await stream_length(one, t) == before  # nothing appended
        assert (await two.http.get("/healthz")).json()["refused"] == {"sends": 1}
        # Another user's sends are their own.
        other = await one.http.post(f"/api/threads/{t}/messages", json=message, headers=bearer(bob))
        assert other.status_code == 202


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, settings, workers=False) as running:
        yield running


async def test_a_chunked_body_past_the_limit_is_413_and_writes_nothing(system: System) -> None:
    t = await system.new_thread()
    before = await stream_length(system, t)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"content": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 8):
            yield b"x" * 1024
        yield b'"}'

    response = await system.http.post(
        f"/api/threads/{t}/messages",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert f"the limit is {MAX_BODY_BYTES}" in response.json()["detail"]
    assert "content-length" not in response.request.headers  # it really was chunked
    assert await stream_length(system, t) == before
    declared = await system.http.post(
        f"/api/threads/{t}/messages", content=b"x" * (MAX_BODY_BYTES + 1)
    )
    assert declared.status_code == 413


async def test_a_socket_frame_past_64_kib_closes_the_socket(system: System) -> None:
    t = await system.new_thread()
    async with connect(system.ws_url(t), max_size=None) as socket:
        assert orjson.loads(await socket.recv())["type"] == "snapshot"
        await socket.send("x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_sockets_per_user(real_backend: Backend, settings: Settings) -> None:
    limited = dataclasses.replace(settings, auth="tokens", sockets_per_user=2, heartbeat_s=0.2)
    async with running_system(real_backend, limited, workers=False) as system:
        token = await system.runtime.auth.users.add("carol-sockets")
        t = (await system.http.post("/api/threads", json={}, headers=bearer(token))).json()["id"]
        url, headers = system.ws_url(t), bearer(token)
        async with connect(url, additional_headers=headers) as first:
            assert orjson.loads(await first.recv())["type"] == "snapshot"
            async with connect(url, additional_headers=headers) as second:
                assert orjson.loads(await second.recv())["type"] == "snapshot"
                async with connect(url, additional_headers=headers) as third:
                    frame = orjson.loads(await third.recv())
                    assert frame["type"] == "error"
                    assert "2 sockets open, the limit" in frame["detail"]
                    with pytest.raises(ConnectionClosed) as closed:
                        await third.recv()
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        # Closed sockets give their places back.
        async with connect(url, additional_headers=headers) as again:
            assert orjson.loads(await again.recv())["type"] == "snapshot"
        assert system.runtime.limits.refused["sockets"] == 1

        # A process killed with its sockets open leaves places that lapse by themselves.
        limits = system.runtime.limits
        redis = system.runtime.backend.client

        async def all_closed() -> bool:
            return int(await redis.zcard("ss:{rate}:sockets:carol-sockets")) == 0

        await until(all_closed)
        for dead in ("dead-1", "dead-2"):
            await limits.hold_socket("carol-sockets", dead)

        async def lapsed() -> bool:
            try:
                await limits.hold_socket("carol-sockets", "fresh")
            except LimitReached:
                return False
            return True

        await until(lapsed, within=5)


async def test_runs_per_user(real_backend: Backend, settings: Settings) -> None:
    slow = dataclasses.replace(
        settings, auth="tokens", runs_per_user=2, scripted_delay_ms=100, scripted_words=200
    )
    async with running_system(real_backend, slow) as system:
        token = await system.runtime.auth.users.add("dave-runs")
        http = httpx.AsyncClient(base_url=str(system.http.base_url), headers=bearer(token))
        async with http:
            threads = [(await http.post("/api/threads", json={})).json()["id"] for _ in range(3)]
            message = {"content": "a long answer", "agent": "assistant"}
            runs = []
            for t in threads[:2]:
                sent = await http.post(f"/api/threads/{t}/messages", json=message)
                assert sent.status_code == 202
                runs.append(sent.json()["run_id"])
            before = await stream_length(system, threads[2])
            refused = await http.post(f"/api/threads/{threads[2]}/messages", json=message)
            assert refused.status_code == 429
            assert "2 runs queued or going, the limit is 2" in refused.json()["detail"]
            assert await stream_length(system, threads[2]) == before
            regenerate = await http.post(f"/api/runs/{runs[0]}/regenerate", json={})
            assert regenerate.status_code in (409, 429)  # going, and over the limit either way
            # One ends (cancelled): a place is free again.
            assert (await http.post(f"/api/runs/{runs[0]}/cancel", json={})).status_code == 202

            async def cancelled() -> bool:
                run = (await http.get(f"/api/runs/{runs[0]}")).json()
                return bool(run["status"] == "cancelled")

            await until(cancelled)
            again = await http.post(f"/api/threads/{threads[2]}/messages", json=message)
            assert again.status_code == 202, again.text
            for run_id in (runs[1], again.json()["run_id"]):
                await http.post(f"/api/runs/{run_id}/cancel", json={})


async def test_schedules_per_user_and_the_shortest_interval(
    backend: Backend, settings: Settings
) -> None:
    limited = dataclasses.replace(settings, schedules_per_user=2, min_schedule_interval_s=120)
    async with running_system(backend, limited, workers=False) as system:

        def body(name: str, **when: object) -> dict[str, object]:
            return {"name": name, "workflow": "research", "input": "x", **when}

        for name in ("a", "b"):
            made = await system.http.put(f"/api/schedules/{name}", json=body(name, every_s=3600))
            assert made.status_code == 200, made.text
        third = await system.http.put("/api/schedules/c", json=body("c", every_s=3600))
        assert third.status_code == 429
        assert "2 schedules, the limit" in third.json()["detail"]
        replaced = await system.http.put("/api/schedules/a", json=body("a", every_s=7200))
        assert replaced.status_code == 200  # replacing one is no new schedule
        assert len((await system.http.get("/api/schedules")).json()) == 2
        assert (await system.http.delete("/api/schedules/b")).status_code == 204
        quick = await system.http.put("/api/schedules/q", json=body("q", every_s=60))
        assert quick.status_code == 422
        assert "every 60 s; the shortest interval allowed is 120 s" in quick.json()["detail"]
        minutely = await system.http.put("/api/schedules/m", json=body("m", cron="* * * * *"))
        assert minutely.status_code == 422
        pair = await system.http.put("/api/schedules/p", json=body("p", cron="0,1 8 * * *"))
        assert pair.status_code == 422  # 08:00 and 08:01: a minute apart once a day
        hourly = await system.http.put("/api/schedules/h", json=body("h", cron="0 * * * *"))
        assert hourly.status_code == 200
        assert system.runtime.limits.refused["schedules"] == 1
