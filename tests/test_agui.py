"""POST /api/ag-ui against a running system: AG-UI's own client (HttpAgent, run in
Node by tests/js/agui_client.mjs) checks every event and its order; the thread's
events say the same; bad input is refused with nothing appended."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers.llm.base import Prompt
from consumers.llm.parts import Part
from consumers.llm.scripted import ScriptedLLM
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ProviderError
from tests.harness import System, running_system

SCRIPT = Path(__file__).resolve().parent / "js" / "agui_client.mjs"
ROOT = Path(__file__).resolve().parent.parent


class FailsWhenAsked:
    """The scripted model, except that a question holding `[[fail]]` fails for good and
    one holding `[[slow]]` takes seconds (time enough to cancel it)."""

    name = "scripted"

    def __init__(self) -> None:
        self.scripted = ScriptedLLM(words=30, delay_ms=1)
        self.slow = ScriptedLLM(words=400, delay_ms=20)

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        if "[[fail]]" in prompt.question:
            raise ProviderError("the model refused", retryable=False)
        model = self.slow if "[[slow]]" in prompt.question else self.scripted
        async for part in model.stream(prompt):
            yield part


async def agui(system: System, thread_id: str, steps: list[dict[str, Any]], **extra: Any) -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; the AG-UI client cannot run")
    url = f"http://127.0.0.1:{system.port}/api/ag-ui"
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    given = json.dumps({"url": url, "threadId": thread_id, "steps": steps, **extra}).encode()
    out, err = await asyncio.wait_for(process.communicate(given), timeout=60)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def events_of(http: httpx.AsyncClient, thread_id: str) -> list[dict[str, Any]]:
    answer = await http.get(f"/api/threads/{thread_id}/events", params={"limit": 10_000})
    assert answer.status_code == 200, answer.text
    return [e["event"] for e in answer.json()]


@pytest.fixture
async def system(real_backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(
        real_backend, dataclasses.replace(settings, max_attempts=1), llm=FailsWhenAsked()
    ) as running:
        yield running


async def test_an_answer_a_resend_and_an_error_through_the_ag_ui_client(system: System) -> None:
    answer, resend, failed = await agui(
        system,
        "agui-answer",
        [
            {"send": "Tell me about streams", "id": "u1", "agent": "assistant"},
            {"resend": "Tell me about streams", "id": "u1", "agent": "assistant"},
            {"send": "This one fails [[fail]]", "id": "u2", "agent": "assistant"},
        ],
    )
    assert answer["error"] is None, answer
    assert answer["types"][0] == "RUN_STARTED" and answer["types"][-1] == "RUN_FINISHED"
    assert "TEXT_MESSAGE_CONTENT" in answer["types"]
    events = await events_of(system.http, "agui-answer")
    completed = [e for e in events if e["type"] == "message.completed"]
    assert answer["text"] == completed[0]["text"] and answer["text"]
    # The resend wrote nothing and was answered with the first send's answer.
    assert resend["error"] is None and resend["text"] == answer["text"]
    sent = [e for e in events if e["type"] == "message.sent"]
    assert [(e["content"], e["client_id"]) for e in sent] == [
        ("Tell me about streams", "u1"),
        ("This one fails [[fail]]", "u2"),
    ]
    assert failed["types"][-1] == "RUN_ERROR"
    run_error = failed["events"][-1]
    failure = next(e for e in events if e["type"] == "run.failed")
    assert run_error["message"] == failure["reason"]


async def test_a_tool_call_an_approval_and_its_resume(system: System) -> None:
    tool, asked, resumed = await agui(
        system,
        "agui-tools",
        [
            {
                "send": 'Add [[tool calculator {"expression": "2+3"}]]',
                "id": "u1",
                "agent": "researcher",
            },
            {
                "send": 'Read [[tool fetch_url {"url": "https://example.invalid/"}]]',
                "id": "u2",
                "agent": "researcher",
            },
            {"resume": {"approved": True}},
        ],
    )
    assert tool["error"] is None, tool
    start = next(e for e in tool["events"] if e["type"] == "TOOL_CALL_START")
    assert start["toolCallName"] == "calculator"
    args = "".join(e["delta"] for e in tool["events"] if e["type"] == "TOOL_CALL_ARGS")
    assert json.loads(args) == {"expression": "2+3"}
    result = next(e for e in tool["events"] if e["type"] == "TOOL_CALL_RESULT")
    assert result["toolCallId"] == start["toolCallId"] and "5" in result["content"]
    assert "calculator returned 5" in tool["text"]

    assert asked["error"] is None, asked
    finished = asked["events"][-1]
    assert finished["type"] == "RUN_FINISHED" and finished["outcome"]["type"] == "interrupt"
    [interrupt] = finished["outcome"]["interrupts"]
    assert interrupt["metadata"]["tool"] == "fetch_url"
    assert asked["pending"] == [interrupt]  # the client holds it for its resume

    assert resumed["error"] is None, resumed
    assert resumed["types"][0] == "RUN_STARTED" and resumed["types"][-1] == "RUN_FINISHED"
    assert resumed["events"][-1]["outcome"] == {"type": "success"}
    assert resumed["pending"] == []
    fetched = next(e for e in resumed["events"] if e["type"] == "TOOL_CALL_RESULT")
    assert fetched["toolCallId"] == interrupt["toolCallId"]
    events = await events_of(system.http, "agui-tools")
    signals = [e for e in events if e["type"] == "signal.received"]
    assert [s["payload"]["approved"] for s in signals] == [True]
    completed = [e for e in events if e["type"] == "message.completed"]
    assert resumed["text"] == completed[-1]["text"]


async def test_a_workflows_steps_and_its_wait(system: System) -> None:
    research, approval = await agui(
        system,
        "agui-flows",
        [
            {"send": "How do consumer groups share work?", "id": "u1", "agent": "research"},
            {"send": "Draft a release note", "id": "u2", "agent": "approval"},
        ],
    )
    assert research["error"] is None, research
    steps = [e["stepName"] for e in research["events"] if e["type"] == "STEP_STARTED"]
    assert steps[0] == "analyze" and "finalize" in steps
    finished = research["events"][-1]
    assert finished["outcome"] == {"type": "success"} and "topics" in finished["result"]
    assert approval["error"] is None, approval
    [interrupt] = approval["events"][-1]["outcome"]["interrupts"]
    assert interrupt["reason"] == "signal" and interrupt["id"].endswith("/approval")


def run_input(thread_id: str, text: str = "hello", message_id: str = "u1", **more: Any) -> Any:
    return {
        "threadId": thread_id,
        "runId": "r1",
        "messages": [{"id": message_id, "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {"agent": "assistant"},
        **more,
    }


async def test_bad_input_is_refused_and_nothing_is_appended(
    real_backend: Backend, settings: Settings
) -> None:
    tokens = dataclasses.replace(settings, auth="tokens", sends_per_minute=3)
    async with running_system(real_backend, tokens) as system:
        users = system.runtime.auth.users
        owner = {"Authorization": f"Bearer {await users.add(f'owner-{id(system)}')}"}
        other = {"Authorization": f"Bearer {await users.add(f'other-{id(system)}')}"}
        http = system.http
        made = await http.post("/api/threads", json={"title": "mine"}, headers=owner)
        thread = made.json()["id"]
        length = await system.runtime.store.version(thread)

        async def refused(body: Any, headers: dict[str, str], code: int, says: str) -> None:
            answer = await http.post("/api/ag-ui", json=body, headers=headers)
            assert answer.status_code == code, answer.text
            assert says in answer.json()["detail"], answer.text

        await refused(run_input(thread), {}, 401, "")
        await refused(run_input(thread), other, 404, thread)  # another's thread: as if none
        await refused(run_input("bad id!"), owner, 422, "threadId")
        assistant_last = run_input(thread)
        assistant_last["messages"].append({"id": "a1", "role": "assistant", "content": "hi"})
        await refused(assistant_last, owner, 422, "last message must be the user's")
        await refused(run_input(thread, text="   "), owner, 422, "must not be empty")
        await refused(run_input(thread, message_id="no spaces"), owner, 422, "client id")
        unknown = run_input(thread, forwardedProps={"agent": "nobody"})
        await refused(unknown, owner, 422, "forwardedProps.agent")
        await refused(run_input(thread, text="x" * 40_000), owner, 413, "at most")
        stranger = run_input(thread, resume=[{"interruptId": "x", "status": "resolved"}])
        await refused(stranger, owner, 422, "interruptId")
        assert await system.runtime.store.version(thread) == length
        # A new thread id is not made by a refused input either.
        await refused(run_input("fresh", text=" "), owner, 422, "must not be empty")
        assert not await system.runtime.store.exists("fresh")
        # Past the sends a minute: 429 with Retry-After, nothing appended.
        for n in range(3):
            async with http.stream(
                "POST", "/api/ag-ui", json=run_input(thread, message_id=f"m{n}"), headers=owner
            ) as answer:
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/event-stream")
                await answer.aread()
        length = await system.runtime.store.version(thread)
        limited = await http.post(
            "/api/ag-ui", json=run_input(thread, message_id="m9"), headers=owner
        )
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert await system.runtime.store.version(thread) == length


async def test_a_cancelled_run_is_the_cancelled_outcome(system: System) -> None:
    body = run_input("agui-cancel", text="Go on at length [[slow]]")
    seen: list[dict[str, Any]] = []
    async with system.http.stream("POST", "/api/ag-ui", json=body) as answer:
        assert answer.status_code == 200
        async for line in answer.aiter_lines():
            if not line.startswith("data: "):
                continue
            seen.append(json.loads(line.removeprefix("data: ")))
            if seen[-1]["type"] == "TEXT_MESSAGE_CONTENT" and len(seen) == 3:
                events = await events_of(system.http, "agui-cancel")
                run_id = next(e["run_id"] for e in events if e["type"] == "run.requested")
                cancel = await system.http.post(f"/api/runs/{run_id}/cancel", json={})
                assert cancel.status_code == 202, cancel.text
    assert seen[-1]["type"] == "RUN_FINISHED"
    assert seen[-1]["outcome"] == {"type": "cancelled"}
    assert seen[-2]["type"] == "TEXT_MESSAGE_END"
