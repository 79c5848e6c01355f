"""The live websocket: snapshot, then every event in order, shared by every tab."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from consumers.llm.scripted import scripted_reply
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, frames_until, running_system


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    slow = dataclasses.replace(settings, scripted_delay_ms=5, scripted_words=60, flush_ms=10)
    async with running_system(backend, slow) as running:
        yield running


def texts(frames: list[dict]) -> str:  # type: ignore[type-arg]
    return "".join(
        f["event"]["text"] for f in frames if f.get("event", {}).get("type") == "message.delta"
    )


async def test_two_tabs_see_the_same_events(system: System) -> None:
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as one, connect(system.ws_url(thread_id)) as two:
        snap_one, snap_two = orjson.loads(await one.recv()), orjson.loads(await two.recv())
        assert snap_one["type"] == snap_two["type"] == "snapshot"
        accepted = await system.send(thread_id, "share this")
        seen_one = await frames_until(one, "run.completed")
        seen_two = await frames_until(two, "run.completed")
    events_one = [f for f in seen_one if f["type"] == "event"]
    assert events_one == [f for f in seen_two if f["type"] == "event"]
    assert [f["event"]["type"] for f in events_one][:4] == [
        "message.sent",
        "agent.routed",  # sent with no agent: the router's decision, in the same append
        "run.requested",
        "run.started",
    ]
    assert texts(events_one) == scripted_reply("share this", 60)
    ids = [tuple(map(int, f["id"].split("-"))) for f in events_one]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events_one[0]["event"]["run_id"] == accepted["run_id"]


async def test_snapshot_then_events_rebuild_the_view(system: System) -> None:
    thread_id = await system.new_thread()
    accepted = await system.send(thread_id, "first")
    await system.wait_for_run(thread_id, accepted["run_id"])
    async with connect(system.ws_url(thread_id)) as socket:
        snapshot = orjson.loads(await socket.recv())
        assert snapshot["view"]["messages"][1]["content"] == scripted_reply("first", 60)
        assert snapshot["last_event_id"] == snapshot["view"]["last_event_id"]
        second = await system.send(thread_id, "second")
        frames = await frames_until(socket, "run.completed", second["run_id"])
    assert frames[0]["event"]["type"] == "message.sent"
    assert texts(frames) == scripted_reply("second", 60)


async def test_reconnecting_with_after_resumes_without_gap_or_duplicate(system: System) -> None:
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as socket:
        await socket.recv()
        accepted = await system.send(thread_id, "resume me")
        before = await frames_until(socket, "message.delta")  # part of the answer, then drop
    async with connect(system.ws_url(thread_id, after=before[-1]["id"])) as socket:
        after = await frames_until(socket, "run.completed")
    events = before + after
    ids = [f["id"] for f in events]
    assert len(ids) == len(set(ids))
    assert texts(events) == scripted_reply("resume me", 60)
    stored = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
    assert [e["id"] for e in stored][1:] == ids
    assert events[-1]["event"]["run_id"] == accepted["run_id"]


async def test_the_answer_completes_when_everyone_leaves(system: System) -> None:
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as socket:
        await socket.recv()
        accepted = await system.send(thread_id, "keep going")
        await frames_until(socket, "message.delta")
    view = await system.wait_for_run(thread_id, accepted["run_id"])
    assert view["messages"][-1]["content"] == scripted_reply("keep going", 60)


@pytest.mark.parametrize(
    ("path", "code", "says"),
    [
        ("/api/threads/tnope/live", 4404, "does not exist"),
        ("/api/threads/t$x/live", 4400, "malformed"),
        ("/api/threads/{thread}/live?after=yesterday", 4400, "not a stream id"),
    ],
)
async def test_bad_subscriptions_are_refused(
    system: System, path: str, code: int, says: str
) -> None:
    thread_id = await system.new_thread()
    url = f"ws://127.0.0.1:{system.port}" + path.format(thread=thread_id)
    async with connect(url) as socket:
        error = orjson.loads(await socket.recv())
        assert error["type"] == "error" and says in error["detail"]
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_an_idle_socket_gets_heartbeats(backend: Backend, settings: Settings) -> None:
    quick = dataclasses.replace(settings, heartbeat_s=0.05)
    async with running_system(backend, quick) as system:
        thread_id = await system.new_thread()
        async with connect(system.ws_url(thread_id)) as socket:
            assert orjson.loads(await socket.recv())["type"] == "snapshot"
            assert orjson.loads(await socket.recv()) == {"type": "ping"}
            await socket.send('{"type": "ping"}')
            frames = [orjson.loads(await socket.recv()) for _ in range(3)]
            assert {"type": "pong"} in frames


async def test_an_unreadable_entry_reaches_the_socket(system: System) -> None:
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as socket:
        await socket.recv()
        store = system.runtime.store
        # Written behind the store's back, as a buggy or newer writer might.
        entry_id = await store.redis.xadd(store.stream_key(thread_id), {"type": "x", "v": "1"})
        await store.redis.xadd(
            store.keys.partition(thread_id).feed,
            {"type": "x", "v": "1", "thread": thread_id, "tid": entry_id},
        )
        store.backend.appended()
        frame = orjson.loads(await asyncio.wait_for(socket.recv(), 10))
    assert frame["id"] == entry_id
    assert frame["event"]["type"] == "unreadable" and frame["event"]["stream"] == store.stream_key(
        thread_id
    )
    view = (await system.http.get(f"/api/threads/{thread_id}")).json()
    assert view["problems"][0]["id"] == entry_id


async def test_the_thread_list_is_live(system: System) -> None:
    first = await system.new_thread()
    async with connect(f"ws://127.0.0.1:{system.port}/api/live/threads") as socket:
        listing = orjson.loads(await socket.recv())
        assert listing["type"] == "threads" and first in [t["id"] for t in listing["threads"]]
        second = await system.new_thread()
        await system.http.patch(f"/api/threads/{first}", json={"title": "Renamed"})
        seen: dict[str, str] = {}
        async with asyncio.timeout(10):
            while seen.get(first) != "Renamed" or second not in seen:
                frame = orjson.loads(await socket.recv())
                if frame["type"] == "thread":
                    seen[frame["summary"]["id"]] = frame["summary"]["title"]


class RecordingSocket:
    """Just enough of a websocket to see what _forward sends and how it closes."""

    def __init__(self) -> None:
        from starlette.websockets import WebSocketState

        self.client_state = WebSocketState.CONNECTED
        self.sent: list[dict] = []  # type: ignore[type-arg]
        self.closed: int | None = None

    async def send_text(self, text: str) -> None:
        self.sent.append(orjson.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = code


async def test_a_slow_socket_is_dropped_at_its_first_lost_event(
    backend: Backend, settings: Settings
) -> None:
    from service.live import Subscription, event_frame
    from service.runtime import Runtime
    from service.websocket import CLOSE_TOO_SLOW, _forward

    subscription = Subscription("t1", 3)
    for seq in range(1, 7):  # e4..e6 find the queue full: e4 is lost
        subscription.offer(f"1-{seq}", event_frame(f"1-{seq}", {"type": "x", "seq": seq}))
    socket = RecordingSocket()
    never = asyncio.get_running_loop().create_future()
    rt = Runtime.build(settings, backend)
    await _forward(rt, socket, subscription, None, never)  # type: ignore[arg-type]
    never.cancel()
    ids = [frame["id"] for frame in socket.sent if frame["type"] == "event"]
    assert ids == []  # nothing past a gap; the client resumes from what it had
    assert socket.closed == CLOSE_TOO_SLOW
