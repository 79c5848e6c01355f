"""The live tail writes a frame to a socket itself while that socket's sender has nothing
queued (service/ws_protocol.py), and hands over to the sender, in order, when it cannot."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.websockets import WebSocketState
from uvicorn.server import ServerState
from websockets.asyncio.client import connect

from consumers.llm.scripted import scripted_reply
from service.live import Subscription, event_frame
from service.runtime import Runtime
from service.websocket import PING, _forward
from service.ws_protocol import DEFLATE_WINDOW_BITS, SEND_NOW, LiveWebSocketProtocol
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, frames_until, running_system
from tests.waits import until


def frame(seq: int) -> tuple[str, str]:
    entry_id = f"1-{seq}"
    return entry_id, event_frame(entry_id, {"type": "x", "seq": seq})


class Direct:
    """A SEND_NOW that writes while `open`, and notes what it wrote."""

    def __init__(self) -> None:
        self.open = True
        self.written: list[str] = []

    def __call__(self, text: str) -> bool:
        if not self.open:
            return False
        self.written.append(orjson.loads(text)["id"])
        return True


def test_an_idle_sender_lets_the_tail_write_each_frame_in_order() -> None:
    subscription, direct = Subscription("t1", 10), Direct()
    subscription.direct, subscription.last = direct, "1-2"
    for seq in range(1, 6):
        subscription.offer(*frame(seq))
    # 1-1 and 1-2 were in the socket's snapshot already
    assert direct.written == ["1-3", "1-4", "1-5"]
    assert not subscription.pending and subscription.last == "1-5"
    assert subscription.sent_directly == 3


def test_a_frame_the_socket_cannot_take_now_queues_it_and_every_later_one() -> None:
    subscription, direct = Subscription("t1", 10), Direct()
    subscription.direct = direct
    subscription.offer(*frame(1))
    direct.open = False
    subscription.offer(*frame(2))
    direct.open = True  # writable again, but 1-2 waits in the queue: 1-3 goes behind it
    subscription.offer(*frame(3))
    assert direct.written == ["1-1"]
    assert [entry_id for entry_id, _ in subscription.pending] == ["1-2", "1-3"]


def test_a_direct_write_that_raises_queues_the_frame() -> None:
    subscription = Subscription("t1", 10)

    def broken(text: str) -> bool:
        raise RuntimeError("the protocol changed under us")

    subscription.direct = broken
    subscription.offer(*frame(1))
    assert [entry_id for entry_id, _ in subscription.pending] == ["1-1"]


class DirectSocket:
    """A socket whose connection offers SEND_NOW, and which records the ASGI sends."""

    def __init__(self, direct: Direct) -> None:
        self.scope: dict[str, Any] = {"extensions": {SEND_NOW: direct}}
        self.client_state = WebSocketState.CONNECTED
        self.sent: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(orjson.loads(text))


async def test_the_sender_takes_over_when_the_tail_cannot_write_and_hands_back_after(
    backend: Backend, settings: Settings
) -> None:
    rt = Runtime.build(dataclasses.replace(settings, heartbeat_s=30), backend)
    subscription, direct = Subscription("t1", 10), Direct()
    subscription.offer(*frame(1))  # queued before the sender started: it sends this one
    socket = DirectSocket(direct)
    receiver: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sender = asyncio.create_task(_forward(rt, socket, subscription, None, receiver))  # type: ignore[arg-type]
    try:
        await until(lambda: _true(subscription.direct is not None))
        subscription.offer(*frame(2))
        direct.open = False
        subscription.offer(*frame(3))  # cannot be written now: the sender sends it
        subscription.offer(*frame(4))
        direct.open = True
        await until(lambda: _true(subscription.direct is not None and not subscription.pending))
        subscription.offer(*frame(5))
    finally:
        receiver.set_result(None)
        await sender
    assert [f["id"] for f in socket.sent] == ["1-1", "1-3", "1-4"]
    assert direct.written == ["1-2", "1-5"]
    assert subscription.direct is None  # a sender that ended lets nothing write any more


async def test_a_heartbeat_pings_only_a_socket_that_was_sent_nothing(
    backend: Backend, settings: Settings
) -> None:
    rt = Runtime.build(dataclasses.replace(settings, heartbeat_s=0.5), backend)
    subscription, direct = Subscription("t1", 10), Direct()
    waits = 0
    wait = subscription.wait

    async def counted(seconds: float) -> bool:
        nonlocal waits
        woke = await wait(seconds)
        waits += 1
        return woke

    subscription.wait = counted  # type: ignore[method-assign]
    socket = DirectSocket(direct)
    receiver: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sender = asyncio.create_task(_forward(rt, socket, subscription, None, receiver))  # type: ignore[arg-type]
    try:
        await until(lambda: _true(subscription.direct is not None))
        subscription.offer(*frame(1))  # written by the tail: the sender is not woken
        await until(lambda: _true(waits >= 1))  # a heartbeat passed, with a frame in it
        assert socket.sent == []
        await until(lambda: _true(waits >= 2))  # a heartbeat with nothing: a ping
    finally:
        receiver.set_result(None)
        await sender
    assert [orjson.dumps(f).decode() for f in socket.sent] == [PING]
    assert direct.written == ["1-1"]


async def _true(value: bool) -> bool:
    return value


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    slow = dataclasses.replace(settings, scripted_delay_ms=5, scripted_words=60, flush_ms=10)
    async with running_system(backend, slow) as running:
        yield running


def subscriptions_of(system: System, thread_id: str) -> list[Subscription]:
    hub = system.runtime.hub
    tail = hub._tails[hub.keys.partition(thread_id).number]
    return list(tail.subscribers.get(thread_id, ()))


async def test_a_served_socket_gets_an_answer_written_by_the_tail(system: System) -> None:
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as socket:
        assert orjson.loads(await socket.recv())["type"] == "snapshot"
        (subscription,) = subscriptions_of(system, thread_id)
        await system.send(thread_id, "write it yourself")
        frames = await frames_until(socket, "run.completed")
    events = [f for f in frames if f["type"] == "event"]
    text = "".join(f["event"]["text"] for f in events if f["event"]["type"] == "message.delta")
    assert text == scripted_reply("write it yourself", 60)
    ids = [tuple(map(int, f["id"].split("-"))) for f in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert subscription.sent_directly > 0


async def test_a_socket_compresses_with_a_window_that_holds_the_frame_before(
    system: System,
) -> None:
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as socket:  # asks for permessage-deflate
        assert socket.response is not None
        extensions = socket.response.headers["Sec-WebSocket-Extensions"]
        await socket.recv()
    assert "permessage-deflate" in extensions
    assert f"server_max_window_bits={DEFLATE_WINDOW_BITS}" in extensions


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it is closing."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name in ("peername", "sockname") else default


async def test_the_protocol_writes_now_only_what_it_can_write_at_once() -> None:
    scopes: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        scopes.append(scope)
        await done.wait()

    config = uvicorn.Config(app, ws=LiveWebSocketProtocol, ws_per_message_deflate=False)
    config.load()
    protocol = LiveWebSocketProtocol(config, ServerState(), {})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(
        b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        await until(lambda: _true(bool(scopes)))
        send_now = scopes[0]["extensions"][SEND_NOW]
        written = len(transport.data)
        assert send_now('{"a":1}') and transport.data[written:] == b'\x81\x07{"a":1}'
        protocol.pause_writing()  # the transport's buffer is full
        assert not send_now('{"a":2}')
        protocol.resume_writing()
        assert send_now('{"a":3}')
        transport.closing = True
        assert not send_now('{"a":4}')
        assert b'{"a":2}' not in transport.data and b'{"a":4}' not in transport.data
    finally:
        done.set()
        protocol.connection_lost(None)
        await asyncio.gather(*protocol.tasks, return_exceptions=True)
