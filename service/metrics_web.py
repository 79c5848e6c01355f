"""The web role's metrics: `GET /metrics`, and the requests and sockets it counts.

`/metrics` asks for no identity, as Prometheus scrapers carry none: it holds
only aggregate numbers, labelled by agent, model, tool, workflow and fixed
words, never a thread, a user or any text of theirs. The Host check of
service/security.py still applies; a deployment whose web port is public
keeps `/metrics` to its scrapers at the proxy (the README, "Metrics").

`RequestMetrics`, outermost, sees every answer: an HTTP status of 400 or more
(but 500, a bug, not a refusal) counts as a rejected request by reason, and so
does a socket closed before it was accepted (the 403 of its handshake) or with
one of service/websocket.py's refusal codes. It counts open sockets too.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.security import REFUSAL
from slipstream import metrics

router = APIRouter()

HTTP_REASONS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}
"""The reason of each refusal's status; any other 4xx is `other`."""

SOCKET_REASONS = {
    4400: "bad_request",
    4401: "unauthenticated",
    4403: "forbidden",
    4404: "not_found",
    4429: "rate_limited",
    1013: "unavailable",
}
"""The reason of each close code a socket is refused with after it was accepted
(service/websocket.py); others (a client gone, 4008 too slow) refuse nothing."""


@router.get("/metrics", include_in_schema=False)
async def scrape() -> Response:
    """Every series of this process, or of all on this host in multi-process mode."""
    return Response(metrics.scrape(), media_type=metrics.CONTENT_TYPE)


def http_reason(status: int) -> str | None:
    if status in HTTP_REASONS:
        return HTTP_REASONS[status]
    return "other" if 400 <= status < 500 else None


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._socket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                reason = http_reason(int(message["status"]))
                if reason is not None:
                    metrics.REJECTED.labels(scope.get(REFUSAL) or reason).inc()
            await send(message)

        await self.app(scope, receive, counted)

    async def _socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = False

        async def counted(message: Message) -> None:
            nonlocal accepted
            kind = message["type"]
            if kind == "websocket.accept" and not accepted:
                await send(message)
                accepted = True  # once the accept went out: a failed one opened nothing
                metrics.OPEN_SOCKETS.inc()
                return
            if kind == "websocket.close":
                if not accepted:  # the handshake is answered 403
                    metrics.REJECTED.labels(scope.get(REFUSAL) or "forbidden").inc()
                else:
                    reason = SOCKET_REASONS.get(int(message.get("code") or 1000))
                    if reason is not None:
                        metrics.REJECTED.labels(reason).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            if accepted:
                metrics.OPEN_SOCKETS.dec()
