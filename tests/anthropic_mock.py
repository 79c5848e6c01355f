"""A local stand-in for the Anthropic Messages API (`POST /v1/messages`, streaming), scripted
per request so tests can provoke overloads, in-stream errors, dropped connections and stalls,
with text and tool_use blocks and the usage counts the real API reports."""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Kind = Literal["ok", "status", "sse_error", "drop", "stall", "end_early"]


@dataclass(frozen=True)
class Text:
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class ToolUse:
    """A tool_use block whose input streams as these `input_json_delta` pieces."""

    call_id: str
    name: str
    json_chunks: tuple[str, ...]


Block = Text | ToolUse


@dataclass(frozen=True)
class MockUsage:
    input_tokens: int = 25
    output_tokens: int | None = None  # None: 1 + the number of deltas sent
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Behaviour:
    """One response. A failing kind fails inside the last block: it never gets its
    `content_block_stop` (a text block mid-sentence, a tool_use block mid-input)."""

    kind: Kind
    blocks: tuple[Block, ...] = ()
    status: int = 200
    error_type: str = ""
    message: str = ""
    stop_reason: str = "end_turn"
    usage: MockUsage = MockUsage()


def text(*chunks: str) -> Text:
    return Text(chunks)


def tool_use(call_id: str, name: str, *json_chunks: str) -> ToolUse:
    return ToolUse(call_id, name, json_chunks)


def _blocks(content: tuple[str | Block, ...]) -> tuple[Block, ...]:
    """Strings in a row make one text block; blocks are kept as they are."""
    blocks: list[Block] = []
    for item in content:
        if isinstance(item, str):
            if blocks and isinstance(blocks[-1], Text):
                blocks[-1] = Text((*blocks[-1].chunks, item))
            else:
                blocks.append(Text((item,)))
        else:
            blocks.append(item)
    return tuple(blocks) or (Text(()),)


def ok(
    *content: str | Block, stop_reason: str | None = None, usage: MockUsage = MockUsage()
) -> Behaviour:
    """A whole answer; its stop reason is `tool_use` when it has a tool_use block."""
    blocks = _blocks(content)
    if stop_reason is None:
        stop_reason = "tool_use" if any(isinstance(b, ToolUse) for b in blocks) else "end_turn"
    return Behaviour("ok", blocks, stop_reason=stop_reason, usage=usage)


def status(code: int, error_type: str, message: str = "") -> Behaviour:
    return Behaviour("status", status=code, error_type=error_type, message=message or error_type)


def overloaded() -> Behaviour:
    return status(529, "overloaded_error", "Overloaded")


def sse_error_midstream(
    *content: str | Block, error_type: str = "overloaded_error", message: str = "Overloaded"
) -> Behaviour:
    return Behaviour("sse_error", _blocks(content), error_type=error_type, message=message)


def drop_midstream(*content: str | Block) -> Behaviour:
    """Sends the deltas, then closes the socket without finishing the chunked body."""
    return Behaviour("drop", _blocks(content))


def stall(*content: str | Block) -> Behaviour:
    """Sends the deltas, then goes silent until the mock shuts down."""
    return Behaviour("stall", _blocks(content))


def end_early(*content: str | Block) -> Behaviour:
    """Sends the deltas and ends the body cleanly, but never sends `message_stop`."""
    return Behaviour("end_early", _blocks(content))


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class MockAnthropic:
    url: str
    requests: list[RecordedRequest] = field(default_factory=list)
    _script: deque[Behaviour] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _released: threading.Event = field(default_factory=threading.Event)
    _connections: list[socket.socket] = field(default_factory=list)
    _counter: int = 0

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def _next(self, request: RecordedRequest) -> tuple[Behaviour | None, int]:
        with self._lock:
            self.requests.append(request)
            self._counter += 1
            return (self._script.popleft() if self._script else None), self._counter


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _message_start(n: int, model: str, usage: MockUsage) -> bytes:
    return _sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": f"msg_mock{n:06d}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": usage.input_tokens,
                    "cache_creation_input_tokens": usage.cache_write_tokens,
                    "cache_read_input_tokens": usage.cache_read_tokens,
                    "output_tokens": 1,
                },
            },
        },
    )


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _sse(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def _block_start(index: int, block: Block) -> bytes:
    content: dict[str, Any] = (
        {"type": "text", "text": ""}
        if isinstance(block, Text)
        else {"type": "tool_use", "id": block.call_id, "name": block.name, "input": {}}
    )
    return _sse(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": content},
    )


def _block_deltas(index: int, block: Block) -> list[bytes]:
    if isinstance(block, Text):
        return [_delta(index, {"type": "text_delta", "text": t}) for t in block.chunks]
    return [
        _delta(index, {"type": "input_json_delta", "partial_json": j}) for j in block.json_chunks
    ]


def _make_handler(mock: MockAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 so the body is chunked as the real API's is: only then can a dropped
        # connection be told apart from a complete body.
        protocol_version = "HTTP/1.1"
        timeout = 30

        def setup(self) -> None:
            super().setup()
            with mock._lock:
                mock._connections.append(self.connection)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            request = RecordedRequest(
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=json.loads(raw) if raw else {},
            )
            behaviour, n = mock._next(request)
            try:
                self._respond(behaviour, n, request)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up on this response (a timeout test); nothing to tell it.
                self.close_connection = True

        def _respond(self, behaviour: Behaviour | None, n: int, request: RecordedRequest) -> None:
            if self.path.split("?")[0] != "/v1/messages":
                self._error(404, "not_found_error", f"mock serves /v1/messages, not {self.path}")
                return
            if behaviour is None:
                self._error(500, "api_error", "mock has no scripted behaviour left", retry=False)
                return
            if behaviour.kind == "status":
                self._error(behaviour.status, behaviour.error_type, behaviour.message)
                return

            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("request-id", f"req_mock{n:06d}")
            self.end_headers()

            self._chunk(_message_start(n, str(request.body.get("model", "")), behaviour.usage))
            deltas = 0
            for index, block in enumerate(behaviour.blocks):
                self._chunk(_block_start(index, block))
                if index == 0:
                    self._chunk(_sse("ping", {"type": "ping"}))
                for delta in _block_deltas(index, block):
                    self._chunk(delta)
                    deltas += 1
                if index < len(behaviour.blocks) - 1 or behaviour.kind == "ok":
                    self._chunk(
                        _sse("content_block_stop", {"type": "content_block_stop", "index": index})
                    )

            if behaviour.kind == "sse_error":
                error = {"type": behaviour.error_type, "message": behaviour.message}
                self._chunk(_sse("error", {"type": "error", "error": error}))
                self._end_body()
            elif behaviour.kind == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif behaviour.kind == "stall":
                self.close_connection = True
                mock._released.wait()
            elif behaviour.kind == "end_early":
                self._end_body()
            else:
                output = behaviour.usage.output_tokens
                self._chunk(
                    _sse(
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": behaviour.stop_reason, "stop_sequence": None},
                            "usage": {"output_tokens": 1 + deltas if output is None else output},
                        },
                    )
                )
                self._chunk(_sse("message_stop", {"type": "message_stop"}))
                self._end_body()

        def _error(self, code: int, error_type: str, message: str, *, retry: bool = True) -> None:
            body = json.dumps(
                {
                    "type": "error",
                    "error": {"type": error_type, "message": message},
                    "request_id": "req_mockerror",
                }
            ).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("request-id", "req_mockerror")
            # The SDK honours this over its own 0.5-8 s back-off, keeping retry tests fast.
            self.send_header("retry-after-ms", "1")
            if not retry:
                self.send_header("x-should-retry", "false")
            self.end_headers()
            self.wfile.write(body)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        def _end_body(self) -> None:
            self.wfile.write(b"0\r\n\r\n")

    return Handler


@contextmanager
def running_mock() -> Iterator[MockAnthropic]:
    """Serves on a free port of 127.0.0.1 for the duration of the `with` block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    host, port = server.server_address[:2]
    mock = MockAnthropic(url=f"http://{host!s}:{port}")
    server.RequestHandlerClass = _make_handler(mock)
    # A short poll interval keeps shutdown() (once per test) from costing half a second.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="anthropic-mock"
    )
    thread.start()
    try:
        yield mock
    finally:
        mock._released.set()
        server.shutdown()
        # Wake handlers parked on a kept-alive connection so server_close() can join them.
        with mock._lock:
            for conn in mock._connections:
                # Already closed by its handler, for most.
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        thread.join()
