"""The websocket side of bench.live_latency, in a process of its own.

    python -m bench.watchers < one JSON line:
        {"port": 8000, "threads": [...], "watchers": 2, "deltas": 40, "until": "",
         "deflate": true, "timeout": 60}

Opens `watchers` sockets on `/api/threads/{id}/live` for each thread, prints
"ready" once every socket has its snapshot, then, once every socket has seen
`deltas` deltas or an event of type `until` (or `timeout` seconds passed), one
JSON line:

    {"arrivals": {thread: {seq: [arrival, ...one per socket]}},
     "frame_bytes": ..., "text_bytes": ..., "frames": ..., "closed": [reasons],
     "cpu": seconds this process ran for from "ready" on}

Arrival times come from time.perf_counter(), which is CLOCK_MONOTONIC and so
comparable with the writer's in another process on the same machine.

The client is a bare asyncio protocol rather than a websocket library: a frame
is stamped when its bytes come off the socket, and a thousand sockets cost this
process little, so what is timed is the server rather than the client's own
event loop. It asks for permessage-deflate as browsers do (`--no-deflate`
in bench.live_latency leaves it out), and counts each delta frame's bytes as
they travel: frame header plus (compressed) payload.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

CONNECT_AT_ONCE = 50
"""Sockets opening at a time: a thousand handshakes at once only time out."""
SYNC_FLUSH_TAIL = b"\x00\x00\xff\xff"


@dataclass
class Tally:
    """What every socket of the process saw."""

    arrivals: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    frame_bytes: int = 0
    text_bytes: int = 0
    frames: int = 0
    closed: list[str] = field(default_factory=list)


class Watcher(asyncio.Protocol):
    """One live socket: the handshake, then frames parsed as they arrive."""

    def __init__(
        self, thread_id: str, deltas: int, until: str, tally: Tally, deflate: bool
    ) -> None:
        self.thread_id = thread_id
        self.deltas = deltas
        self.until = until
        self.tally = tally
        self.ask_deflate = deflate
        self.seen: dict[int, list[float]] = tally.arrivals.setdefault(thread_id, {})
        self.count = 0
        self.buffer = bytearray()
        self.upgraded = False
        self.inflater: Any = None  # zlib.decompressobj once permessage-deflate is on
        self.reset_inflater = False  # the server said server_no_context_takeover
        self.fragments: list[bytes] = []
        self.fragment_bytes = 0
        self.compressed = False
        self.snapshot = asyncio.get_running_loop().create_future()
        self.done = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET /api/threads/{self.thread_id}/live HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.ask_deflate:  # what Chrome and Firefox send
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._upgrade(bytes(self.buffer[:end]).decode("latin-1"))
            del self.buffer[: end + 4]
        self._frames(arrived)

    def _upgrade(self, head: str) -> None:
        status, *headers = head.split("\r\n")
        if " 101 " not in status + " ":
            self._close(f"handshake refused: {status}")
            return
        self.upgraded = True
        for line in headers:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-extensions" and "permessage-deflate" in value:
                # A raw inflater with the largest window reads any smaller one.
                self.inflater = zlib.decompressobj(wbits=-15)
                self.reset_inflater = "server_no_context_takeover" in value

    def _frames(self, arrived: float) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            length, start = second & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self._frame(first, payload, start + length, arrived)

    def _frame(self, first: int, payload: bytes, wire: int, arrived: float) -> None:
        opcode, fin = first & 0x0F, first & 0x80
        if opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._close(f"closed by the server: {code} {payload[2:].decode(errors='replace')}")
            return
        if opcode in (0x1, 0x2):
            self.fragments, self.fragment_bytes = [], 0
            self.compressed = bool(first & 0x40)
        elif opcode != 0x0:
            return  # a ping or pong of the protocol: the server sends none
        self.fragments.append(payload)
        self.fragment_bytes += wire
        if not fin:
            return
        data = b"".join(self.fragments)
        if self.compressed:
            if self.reset_inflater:
                self.inflater = zlib.decompressobj(wbits=-15)
            data = self.inflater.decompress(data + SYNC_FLUSH_TAIL)
        self._message(data, self.fragment_bytes, arrived)

    def _message(self, data: bytes, wire: int, arrived: float) -> None:
        frame = orjson.loads(data)
        kind = frame.get("type")
        if kind == "snapshot":
            if not self.snapshot.done():
                self.snapshot.set_result(None)
            return
        if kind == "error":
            self._close(f"error frame: {frame.get('detail')}")
            return
        event = frame.get("event") if kind == "event" else None
        if not event:
            return
        if event.get("type") == self.until and not self.done.done():
            self.done.set_result(None)
        if event.get("type") != "message.delta":
            return
        self.seen.setdefault(event["seq"], []).append(arrived)
        self.tally.frames += 1
        self.tally.frame_bytes += wire
        self.tally.text_bytes += len(event["text"].encode())
        self.count += 1
        if self.count == self.deltas and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._close(f"connection lost: {exc}" if exc else "connection closed")

    def _close(self, why: str) -> None:
        for waiter in (self.snapshot, self.done):
            if not waiter.done():
                waiter.set_result(None)
                if why and waiter is self.done:
                    self.tally.closed.append(why)
        if self.transport is not None:
            self.transport.close()


async def open_watcher(
    spec: dict[str, Any], thread_id: str, tally: Tally, gate: asyncio.Semaphore
) -> Watcher:
    loop = asyncio.get_running_loop()

    def make() -> Watcher:
        return Watcher(thread_id, spec["deltas"], spec["until"], tally, spec["deflate"])

    async with gate:
        _, watcher = await loop.create_connection(make, "127.0.0.1", spec["port"])
        await watcher.snapshot
    return watcher


async def main() -> None:
    spec = orjson.loads(sys.stdin.readline())
    tally = Tally()
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    watchers = await asyncio.gather(
        *(
            open_watcher(spec, thread_id, tally, gate)
            for thread_id in spec["threads"]
            for _ in range(spec["watchers"])
        )
    )
    print("ready", flush=True)
    cpu = time.process_time()
    # A socket that misses a delta never completes: what arrived is reported anyway.
    await asyncio.wait([w.done for w in watchers], timeout=spec.get("timeout", 60))
    missing = sum(1 for w in watchers if not w.done.done())
    if missing:
        tally.closed.append(f"{missing} sockets still waiting at the timeout")
    for watcher in watchers:
        if watcher.transport is not None:
            watcher.transport.close()
    report = {
        "arrivals": tally.arrivals,
        "frame_bytes": tally.frame_bytes,
        "text_bytes": tally.text_bytes,
        "frames": tally.frames,
        "closed": tally.closed,
        "cpu": time.process_time() - cpu,  # while the deltas streamed
    }
    print(orjson.dumps(report, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
