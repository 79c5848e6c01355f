"""A whole Slipstream (web, worker, projector) served on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import orjson
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from consumers.llm.base import LLM
from consumers.worker import Worker
from projections.projector import Projector
from service.__main__ import WS_MAX_FRAME_BYTES, run_worker_and_projector
from service.app import create_app
from service.runtime import Runtime
from service.ws_protocol import LiveWebSocketProtocol
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.ports import free_port
from tests.waits import until


@dataclass
class System:
    runtime: Runtime
    http: httpx.AsyncClient
    port: int

    def ws_url(self, thread_id: str, after: str | None = None) -> str:
        query = f"?after={after}" if after else ""
        return f"ws://127.0.0.1:{self.port}/api/threads/{thread_id}/live{query}"

    async def view(self, thread_id: str) -> dict:  # type: ignore[type-arg]
        response = await self.http.get(f"/api/threads/{thread_id}")
        assert response.status_code == 200, response.text
        view: dict = response.json()  # type: ignore[type-arg]
        return view

    async def new_thread(self) -> str:
        response = await self.http.post("/api/threads", json={})
        assert response.status_code == 201, response.text
        thread_id: str = response.json()["id"]
        return thread_id

    async def send(self, thread_id: str, content: str, **extra: str) -> dict[str, str]:
        response = await self.http.post(
            f"/api/threads/{thread_id}/messages", json={"content": content, **extra}
        )
        assert response.status_code == 202, response.text
        body: dict[str, str] = response.json()
        return body

    async def wait_for_run(self, thread_id: str, run_id: str, within: float = 20) -> dict:  # type: ignore[type-arg]
        """Follow the thread live until the run ends; return the final view."""
        async with connect(self.ws_url(thread_id)) as socket:
            async with asyncio.timeout(within):
                async for frame in socket:
                    data = orjson.loads(frame)
                    if data["type"] == "snapshot":
                        run = data["view"]["runs"].get(run_id)
                        if run and run["status"] in ("completed", "cancelled", "failed"):
                            break
                    elif (
                        data["type"] == "event"
                        and data["event"].get("run_id") == run_id
                        and data["event"]["type"]
                        in ("run.completed", "run.cancelled", "run.failed")
                    ):
                        break
        response = await self.http.get(f"/api/threads/{thread_id}")
        view: dict = response.json()  # type: ignore[type-arg]
        return view


async def run_of(system: System, thread_id: str, run_id: str) -> dict:  # type: ignore[type-arg]
    run: dict = (await system.view(thread_id))["runs"][run_id]  # type: ignore[type-arg]
    return run


async def wait_status(system: System, thread_id: str, run_id: str, status: str) -> dict:  # type: ignore[type-arg]
    async def reached() -> bool:
        return bool((await run_of(system, thread_id, run_id))["status"] == status)

    await until(reached, within=20)
    return await run_of(system, thread_id, run_id)


async def frames_until(
    socket: ClientConnection, done: str, run_id: str | None = None
) -> list[dict]:  # type: ignore[type-arg]
    """Every frame up to and including the first event of type `done`."""
    frames = []
    async for raw in socket:
        frame = orjson.loads(raw)
        frames.append(frame)
        event = frame.get("event") or {}
        if event.get("type") == done and (run_id is None or event.get("run_id") == run_id):
            return frames
    raise AssertionError(f"socket closed before {done}")


def background_with(llm: LLM) -> Callable[[Runtime], AsyncIterator[None]]:
    """A worker on `llm` and a projector, beside the web role."""

    async def background(runtime: Runtime) -> AsyncIterator[None]:
        stop = asyncio.Event()
        worker = Worker(runtime.backend, runtime.store, llm, runtime.settings)
        projector = Projector(runtime.backend, runtime.store, "projector")
        tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(projector.run(stop))]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    return background


@asynccontextmanager
async def running_system(
    backend: Backend, settings: Settings, *, workers: bool = True, llm: LLM | None = None
) -> AsyncIterator[System]:
    runtime = Runtime.build(settings, backend, roles=["web", "worker", "projector"])
    if not workers:
        background = None
    elif llm is not None:
        background = background_with(llm)
    else:
        background = run_worker_and_projector
    app = create_app(runtime, background=background)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ws_ping_interval=None,
            proxy_headers=False,  # as service.__main__ serves it
            ws_max_size=WS_MAX_FRAME_BYTES,
            ws=LiveWebSocketProtocol,  # as service.__main__ serves it: the tail writes frames
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        try:
            yield System(runtime, http, port)
        finally:
            server.should_exit = True
            await task
