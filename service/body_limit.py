"""Request bodies bounded as they arrive, whether they say their length or not.

A Content-Length over the limit is refused before anything is read. A body
sent chunked (no Content-Length), or longer than it said, is counted as it
streams in: the read that passes the limit raises a 413 inside the route's own
body parsing, so nothing is parsed or written and the rest is never buffered.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large(limit: int, seen: str) -> str:
    return f"request body is {seen} bytes; the limit is {limit}"


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = JSONResponse(
                    {"detail": too_large(self.max_bytes, value.decode())}, status_code=413
                )
                await response(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, too_large(self.max_bytes, f"over {self.max_bytes}"))
            return message

        await self.app(scope, counted, send)
