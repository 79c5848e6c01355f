"""`GET /api/threads/{id}/events/stream` over real HTTP on a real Redis: the websocket's
frames as server-sent events, resuming from Last-Event-ID, heartbeats, and refusals."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
from websockets.asyncio.client import connect

from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import frames_until, running_system


@dataclass
class Item:
    id: str | None = None
    data: str | None = None
    comment: str | None = None


async def items(response: httpx.Response) -> AsyncIterator[Item]:
    """The stream's events and comments as they come (parsed as the SSE spec says)."""
    item = Item()
    async for line in response.aiter_lines():
        if line == "":
            if item.data is not None or item.id is not None:
                yield item
            item = Item()
        elif line.startswith(":"):
            yield Item(comment=line[1:].strip())
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "id":
                item.id = value
            elif field == "data":
                item.data = value if item.data is None else f"{item.data}\n{value}"


def stream_path(thread_id: str, after: str | None = None) -> str:
    query = f"?after={after}" if after else ""
    return f"/api/threads/{thread_id}/events/stream{query}"


async def sse_until(
    stream: AsyncIterator[Item], done: str, run_id: str
) -> list[tuple[str | None, dict]]:  # type: ignore[type-arg]
    """(id, frame) of every event up to the first `done` event of the run."""
    got = []
    async for item in stream:
        if item.data is None:
            continue
        frame = orjson.loads(item.data)
        got.append((item.id, frame))
        event = frame.get("event") or {}
        if event.get("type") == done and event.get("run_id") == run_id:
            return got
    raise AssertionError(f"the stream ended before {done}")


async def test_frames_are_the_websockets(real_backend: Backend, settings: Settings) -> None:
    async with running_system(real_backend, settings) as system:
        thread_id = await system.new_thread()
        async with (
            connect(system.ws_url(thread_id)) as socket,
            system.http.stream("GET", stream_path(thread_id)) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            stream = items(response)
            first = await anext(stream)
            snapshot = orjson.loads(first.data or "")
            assert snapshot["type"] == "snapshot"
            assert first.id == snapshot["last_event_id"]
            assert orjson.loads(await socket.recv()) == snapshot
            sent = await system.send(thread_id, "hello there", agent="assistant")
            run_id = sent["run_id"]
            over_sse = await sse_until(stream, "run.completed", run_id)
            over_ws = await frames_until(socket, "run.completed", run_id)
        assert [frame for _, frame in over_sse] == over_ws
        assert [sse_id for sse_id, _ in over_sse] == [frame["id"] for frame in over_ws]
        types = [frame["event"]["type"] for _, frame in over_sse]
        assert types[0] == "message.sent" and "message.delta" in types


async def test_last_event_id_resumes_with_exactly_the_rest(
    real_backend: Backend, settings: Settings
) -> None:
    async with running_system(real_backend, settings) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "tell me something", agent="assistant")
        await system.wait_for_run(thread_id, sent["run_id"])
        events = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
        ids = [e["id"] for e in events]
        middle = ids[len(ids) // 2]
        rest = ids[len(ids) // 2 + 1 :]
        # The header wins over `after` (EventSource keeps its URL when it reconnects).
        for path, headers in (
            (stream_path(thread_id), {"Last-Event-ID": middle}),
            (stream_path(thread_id, after=middle), {}),
            (stream_path(thread_id, after=ids[0]), {"Last-Event-ID": middle}),
        ):
            async with system.http.stream("GET", path, headers=headers) as response:
                got = []
                async for item in items(response):
                    assert item.data is not None, "no heartbeat before the backlog is sent"
                    frame = orjson.loads(item.data)
                    assert frame["type"] == "event" and item.id == frame["id"]
                    got.append(item.id)
                    if item.id == ids[-1]:
                        break
            assert got == rest, (path, headers)


async def test_a_comment_heartbeat_while_idle(real_backend: Backend, settings: Settings) -> None:
    quick = dataclasses.replace(settings, heartbeat_s=0.2)
    async with running_system(real_backend, quick, workers=False) as system:
        thread_id = await system.new_thread()
        last = (await system.view(thread_id))["last_event_id"]
        headers = {"Last-Event-ID": last}
        async with system.http.stream("GET", stream_path(thread_id), headers=headers) as response:
            async with asyncio.timeout(5):
                seen = [item async for item in _first(items(response), 2)]
        assert seen == [Item(comment="ping"), Item(comment="ping")]


async def _first(source: AsyncIterator[Item], count: int) -> AsyncIterator[Item]:
    async for item in source:
        yield item
        count -= 1
        if count == 0:
            return


async def test_bad_requests_are_refused_before_streaming(
    real_backend: Backend, settings: Settings
) -> None:
    async with running_system(real_backend, settings, workers=False) as system:
        thread_id = await system.new_thread()
        cases = [
            (stream_path("not%20an%20id"), {}, 422, "thread_id"),
            (stream_path("nobody-made-this"), {}, 404, "does not exist"),
            (stream_path(thread_id), {"Last-Event-ID": "yesterday"}, 400, "Last-Event-ID"),
            (stream_path(thread_id, after="12"), {}, 400, "after='12' is not a stream id"),
        ]
        for path, headers, status, detail in cases:
            response = await system.http.get(path, headers=headers)
            assert response.status_code == status, (path, response.text)
            assert detail in response.json()["detail"], response.text


async def test_identity_and_access_as_the_websocket(
    real_backend: Backend, settings: Settings
) -> None:
    quick = dataclasses.replace(settings, auth="tokens", heartbeat_s=0.2)
    async with running_system(real_backend, quick, workers=False) as system:
        users = system.runtime.auth.users
        alice, bob = await users.add("alice-sse"), await users.add("bob-sse")
        owner = {"Authorization": f"Bearer {alice}"}
        stranger = {"Authorization": f"Bearer {bob}"}
        created = await system.http.post("/api/threads", json={}, headers=owner)
        thread_id = created.json()["id"]
        path = stream_path(thread_id)

        anonymous = await system.http.get(path)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        bad = await system.http.get(path, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        # A stranger hears what a missing thread says, word for word.
        other = await system.http.get(path, headers=stranger)
        missing = await system.http.get(stream_path("nobody-made-this"), headers=stranger)
        assert other.status_code == 404
        assert other.json()["detail"] == f"thread {thread_id!r} does not exist"
        assert missing.json()["detail"] == "thread 'nobody-made-this' does not exist"

        # The owner streams until revoked: cut off at the next heartbeat, saying why.
        async with system.http.stream("GET", path, headers=owner) as response:
            assert response.status_code == 200
            stream = items(response)
            first = await anext(stream)
            assert orjson.loads(first.data or "")["type"] == "snapshot"
            await users.revoke("alice-sse")
            async with asyncio.timeout(5):
                rest = [item async for item in stream]
        assert rest[-1].data is not None
        assert orjson.loads(rest[-1].data)["type"] == "error"
        assert "revoked" in orjson.loads(rest[-1].data)["detail"]
