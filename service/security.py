"""Browser defences, one ASGI middleware in front of every route.

- Every HTTP answer carries a strict Content-Security-Policy and the headers that stop
  sniffing, framing and referrer leaks.
- A request whose Host is not allowed gets 400: a DNS-rebinding page (attacker.example
  resolving to 127.0.0.1) then cannot talk to a local Slipstream.
- A websocket handshake from a browser page of another origin is refused (403) before it
  is accepted: browsers let any page open a socket anywhere, with no CORS.
- A state-changing request (POST, PUT, PATCH, DELETE) a browser sends from another site is
  refused (403): a cross-site form or text/plain fetch needs no CORS preflight.

Programs (curl, the websockets library, tests) send neither Origin nor Sec-Fetch-Site and
are let through: these checks are about what a browser can be made to do, not about who
calls (identity comes later).

Why not Starlette's TrustedHostMiddleware: it answers a plain-text "Invalid host header"
where every other refusal of this API is JSON with a `detail`, it adds a www. redirect we
do not want, and it would be a second middleware for headers parsed once here.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
    ]
)
HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_SITE = frozenset({"cross-site", "same-site"})
"""Sec-Fetch-Site values of a request another origin's page made."""
REFUSAL = "slipstream.refusal"
"""The scope key naming why this middleware refused (`host`, `origin`), for the count of
rejected requests (service/metrics_web.py) outside it."""


def host_name(host: str) -> str:
    """The name part of a Host header (`[::1]:8000` -> `[::1]`), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_host_names(configured: Iterable[str], bound_host: str | None) -> frozenset[str]:
    """`configured` (SLIPSTREAM_ALLOWED_HOSTS) or, when empty, loopback plus the bound host."""
    names = list(configured)
    if not names:
        names = [*LOOPBACK_HOSTS]
        if bound_host:
            names.append(f"[{bound_host}]" if ":" in bound_host else bound_host)
    return frozenset(host_name(n) if n != "*" else "*" for n in names)


def origin_of(url: str) -> str:
    """`https://Chat.Example:443/x` -> `https://chat.example:443`: what an Origin header holds."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class BrowserDefences:
    def __init__(
        self, app: ASGIApp, *, allowed_hosts: frozenset[str], allowed_origins: Iterable[str]
    ) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = frozenset(origin_of(o) for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.allowed_hosts:
            await _refuse(scope, send, 400, "host not allowed")
            return
        origin = headers.get("origin")
        if scope["type"] == "websocket":
            if origin is not None and not self._origin_allowed(origin, host):
                await _refuse(scope, send, 403, "cross-origin socket refused")
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] in UNSAFE_METHODS and not self._may_change(headers, host):
            await _refuse(scope, send, 403, "cross-origin request refused")
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if origin.lower() == "null":  # sandboxed frames, file: pages: never ours
            return False
        parts = urlsplit(origin.strip())
        if parts.netloc.lower() == host.strip().lower():
            return True  # same origin: the page came from this Host
        return origin_of(origin) in self.allowed_origins

    def _may_change(self, headers: dict[str, str], host: str) -> bool:
        origin = headers.get("origin")
        if origin is not None:
            return self._origin_allowed(origin, host)
        # No Origin: a program, or an old browser that sends only Sec-Fetch-Site.
        return headers.get("sec-fetch-site", "").lower() not in CROSS_SITE


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _refuse(scope: Scope, send: Send, status: int, detail: str) -> None:
    scope[REFUSAL] = "host" if status == 400 else "origin"
    if scope["type"] == "websocket":
        # A close before accept: the server answers the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": detail})
        return
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
