"""The FastAPI application: API routes, the live websocket and the web chat."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import agui, api, chat_api, metrics_web, openapi, session, sse, websocket
from service.body_limit import BodyLimit
from service.limits import LimitReached
from service.metrics_web import RequestMetrics
from service.runtime import Runtime
from service.security import BrowserDefences, allowed_host_names
from service.traced_requests import TracedRequests
from slipstream import errors, metrics
from slipstream.supervise import is_redis_fault

log = logging.getLogger("slipstream.web")


def _static_dir() -> Path:
    """The chat's files: `service/static` in an installed wheel (pyproject maps the
    repository's static/ there), static/ beside the package in a source tree."""
    here = Path(__file__).resolve().parent
    packaged = here / "static"
    return packaged if packaged.is_dir() else here.parent / "static"


STATIC_DIR = _static_dir()
MAX_BODY_BYTES = 64 * 1024

_STATUS: dict[type[errors.SlipstreamError], int] = {
    errors.ThreadNotFound: 404,
    errors.RunNotFound: 404,
    errors.ThreadExists: 409,
    errors.VersionConflict: 409,
    errors.RunFinished: 409,
    errors.RunCancelled: 409,
    errors.StaleFence: 409,
    errors.RunStatusChanged: 409,
    errors.ThreadBusy: 409,
    errors.SignalRefused: 409,
    errors.SignalUnawaited: 409,
    errors.SignalInvalid: 422,
    errors.QueueFull: 429,
}

Background = Callable[[Runtime], AsyncIterator[None]]


def create_app(
    runtime: Runtime, *, background: Background | None = None, bound_host: str | None = None
) -> FastAPI:
    """`background`, an async context manager factory, runs beside the web role
    (the embedded worker and projector); `bound_host`, the address listened on, is an
    allowed Host unless SLIPSTREAM_ALLOWED_HOSTS says otherwise."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if background is None:
            try:
                yield
            finally:
                await runtime.hub.close()
                await runtime.close_llm()
            return
        async with asynccontextmanager(background)(runtime):
            try:
                yield
            finally:
                await runtime.hub.close()  # sockets go before what they read from
                await runtime.close_llm()

    app = FastAPI(
        title="Slipstream",
        summary="Asynchronous AI agents on Redis Streams",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.openapi = lambda: openapi.publish(app)  # type: ignore[method-assign]
    app.include_router(api.router)
    app.include_router(api.public)
    app.include_router(session.router)
    app.include_router(websocket.router)
    app.include_router(chat_api.router)
    app.include_router(agui.router)
    app.include_router(sse.router)
    app.include_router(metrics_web.router)
    metrics.mark_exported()

    @app.exception_handler(errors.SlipstreamError)
    async def _domain_error(request: Request, exc: errors.SlipstreamError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_STATUS.get(type(exc), 400))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != 405:
            return await http_exception_handler(request, exc)
        # Starlette's Allow names only the first route of the path; a path served by
        # several routes (GET and POST /api/threads) takes the methods of them all.
        allowed = sorted(
            {
                method
                for route in app.routes
                if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
                for method in route.methods or ()
            }
        )
        return JSONResponse(
            {"detail": f"{request.method} is not allowed here; use {', '.join(allowed)}"},
            status_code=405,
            headers={"Allow": ", ".join(allowed)},
        )

    @app.exception_handler(LimitReached)
    async def _limited(request: Request, exc: LimitReached) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)},
            status_code=429,
            headers={"Retry-After": str(max(1, exc.retry_after_s))},
        )

    @app.exception_handler(RedisError)
    async def _redis_error(request: Request, exc: RedisError) -> JSONResponse:
        if not is_redis_fault(exc):
            log.error("%s %s: Redis refused a command: %s", request.method, request.url.path, exc)
            return JSONResponse({"detail": "internal error"}, status_code=500)
        return JSONResponse(
            {
                "detail": f"Redis is unavailable ({type(exc).__name__}); try again shortly. "
                "A resend with the same client_id is never applied twice."
            },
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        return JSONResponse(
            {"detail": "; ".join(problems), "errors": [_plain(e) for e in exc.errors()]},
            status_code=422,
        )

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    # Outermost: a refused request reaches neither the body limit nor a route.
    app.add_middleware(
        BrowserDefences,
        allowed_hosts=allowed_host_names(runtime.settings.allowed_hosts, bound_host),
        allowed_origins=runtime.settings.allowed_origins,
    )
    # Outside it: its refusals are counted too.
    app.add_middleware(RequestMetrics)
    # Outside even that: a span for every request, refused ones too (traces on only).
    app.add_middleware(TracedRequests)
    return app


def _plain(error: object) -> dict[str, object]:
    data = dict(error) if isinstance(error, dict) else {"msg": str(error)}
    data.pop("ctx", None)  # may hold exception objects that do not serialise
    data.pop("url", None)
    data["input"] = repr(data.get("input"))[:200]
    return data
