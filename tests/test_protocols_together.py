"""One answer watched through every protocol at once: asked by an AG-UI client
(@ag-ui/client's HttpAgent), watched over the websocket, the SSE stream and the AI
SDK's resume (the ai package's DefaultChatTransport); all four end with the text of
the thread's message.completed. Every protocol is a translation of the same stream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, running_system
from tests.waits import until

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "tests" / "js"


@pytest.fixture
async def system(real_backend: Backend, settings: Settings) -> AsyncIterator[System]:
    slow = dataclasses.replace(settings, scripted_delay_ms=15, scripted_words=80)
    async with running_system(real_backend, slow) as running:
        yield running


async def node(script: str, argv: list[str], stdin: bytes = b"") -> Any:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not on PATH; the protocol clients cannot run")
    process = await asyncio.create_subprocess_exec(
        found,
        str(JS / script),
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def sse_completed_text(base: str, thread_id: str, run_id: str) -> str:
    """The SSE stream from the thread's start: the run's message.completed text."""
    path = f"/api/threads/{thread_id}/events/stream"
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as http,
        http.stream("GET", path) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            event = orjson.loads(line[5:]).get("event") or {}
            if event.get("type") == "message.completed" and event.get("run_id") == run_id:
                return str(event["text"])
    raise AssertionError("the SSE stream ended before the answer did")


async def test_four_protocols_watch_one_answer_and_end_with_its_text(system: System) -> None:
    base = f"http://127.0.0.1:{system.port}"
    thread_id = "together"
    asked = asyncio.create_task(
        node(
            "agui_client.mjs",
            [],
            json.dumps(
                {
                    "url": f"{base}/api/ag-ui",
                    "threadId": thread_id,
                    "steps": [{"send": "One answer, four ways to watch it", "id": "u-together"}],
                }
            ).encode(),
        )
    )

    async def running_run() -> str | None:
        view = await system.http.get(f"/api/threads/{thread_id}")
        if view.status_code != 200:
            return None
        for run in view.json()["runs"].values():
            if run["status"] == "running":
                return str(run["id"])
        return None

    async def running() -> bool:
        return await running_run() is not None

    await until(running, within=20)
    run_id = await running_run()
    assert run_id is not None
    over_sse = asyncio.create_task(sse_completed_text(base, thread_id, run_id))
    over_ai_sdk = asyncio.create_task(
        node(
            "ai_sdk_chat.mjs",
            [json.dumps({"base": base, "scenario": "watch", "chatId": thread_id})],
        )
    )
    view = await system.wait_for_run(thread_id, run_id)
    over_websocket = next(
        m for m in view["messages"] if m["run_id"] == run_id and m["role"] == "assistant"
    )["content"]

    stored = await system.http.get(f"/api/threads/{thread_id}/events", params={"limit": 1000})
    [completed] = [
        e["event"]["text"]
        for e in stored.json()
        if e["event"]["type"] == "message.completed" and e["event"]["run_id"] == run_id
    ]
    [agui] = await asked
    ai_sdk = await over_ai_sdk
    assert agui["error"] is None and not ai_sdk["errors"]
    assert over_websocket == completed
    assert await over_sse == completed
    assert ai_sdk["text"] == completed
    assert agui["text"] == completed
