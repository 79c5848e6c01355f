"""A server span per HTTP request when traces are on (slipstream/tracing.py).

The span is current while the route runs, so a run the request asks for carries
its context (`run.requested`'s `traceparent`). A caller's own `traceparent` header
is its parent. Websockets are not spanned here: a socket lives for hours; the live
fan-out spans each run's delivery instead. With traces off a request only passes
through.
"""

from __future__ import annotations

from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slipstream import tracing


class TracedRequests:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled(tracing.WEB):
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        status = 0

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with tracing.tracer(tracing.WEB).start_as_current_span(
            method,
            context=tracing.context_from_headers(scope.get("headers", [])),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
        ) as span:
            try:
                await self.app(scope, receive, noted)
            finally:
                # The route is known once routing has run (FastAPI puts it in the scope).
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                if status:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
