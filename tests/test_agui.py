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
    """The scripted model, except that a question holding `[[fail]]` fails for good."""

    name = "scripted"

    def __init__(self) -> None:
        self.scripted = ScriptedLLM(words=30, delay_ms=1)

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        if "[[fail]]" in prompt.question:
            raise ProviderError("the model refused", retryable=False)
        async for part in self.scripted.stream(prompt):
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
