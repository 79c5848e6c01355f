"""/api/chat driven by the AI SDK itself (tests/js/ai_sdk_chat.mjs: the `ai` package's
DefaultChatTransport and readUIMessageStream, which check every chunk and its order),
against a whole Slipstream; each answer is compared with the thread's own events."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import running_system
from tests.processes import embedded_service

SCRIPT = Path(__file__).resolve().parent / "js" / "ai_sdk_chat.mjs"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_service(
        tmp_path_factory.mktemp("ai-sdk"),
        SLIPSTREAM_LLM="scripted",
        SLIPSTREAM_SCRIPTED_DELAY_MS="4",
        SLIPSTREAM_SCRIPTED_WORDS="60",
        SLIPSTREAM_MAX_HANDOFFS="0",  # a hand-off fails its run: the error case
    ) as (url, _env):
        yield url


def drive(base: str, scenario: str, **args: Any) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; the AI SDK cannot be run")
    done = subprocess.run(
        [node, str(SCRIPT), json.dumps({"base": base, "scenario": scenario, **args})],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def chat_id() -> str:
    return "c_" + uuid.uuid4().hex[:16]


def events(base: str, thread_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/api/threads/{thread_id}/events", params={"limit": 10000})
    assert response.status_code == 200, response.text
    return [item["event"] for item in response.json()]


def completed_text(base: str, thread_id: str, message_id: str) -> str:
    found = [
        e["text"]
        for e in events(base, thread_id)
        if e["type"] == "message.completed" and e["message_id"] == message_id
    ]
    assert len(found) == 1, found
    text: str = found[0]
    return text


def test_an_answer_streams_the_threads_text_and_a_resend_writes_nothing(base: str) -> None:
    chat = chat_id()
    result = drive(base, "answer", chatId=chat, messageId="u1", text="Tell me about streams")
    first, again = result["first"], result["again"]
    assert first["types"][:2] == ["start", "start-step"]
    assert first["types"][-2:] == ["finish-step", "finish"]
    assert first["text"] == completed_text(base, chat, first["id"])
    assert first["metadata"]["threadId"] == chat
    usage = first["metadata"]["usage"]
    assert usage["outputTokens"] > 0 and usage["totalTokens"] > usage["outputTokens"]
    view = httpx.get(f"{base}/api/threads/{chat}").json()
    assert [m["role"] for m in view["messages"]] == ["user", "assistant"]
    assert view["messages"][0]["client_id"] == "u1"
    assert view["messages"][1]["id"] == first["id"]  # the reply's id is the view's
    # The resend: the same answer, nothing appended.
    assert again["id"] == first["id"] and again["text"] == first["text"]
    assert [e["type"] for e in events(base, chat)].count("message.sent") == 1


def test_regenerate_streams_a_new_answer_to_the_same_message(base: str) -> None:
    chat = chat_id()
    result = drive(base, "regenerate", chatId=chat, messageId="u1", text="Say it twice")
    first, second = result["first"], result["second"]
    assert second["id"] != first["id"]
    assert second["text"] == completed_text(base, chat, second["id"])
    requested = [e for e in events(base, chat) if e["type"] == "run.requested"]
    assert len(requested) == 2 and requested[0]["message_id"] == requested[1]["message_id"]


def test_a_tool_call_and_its_result_are_tool_parts(base: str) -> None:
    chat = chat_id()
    result = drive(
        base,
        "tool",
        chatId=chat,
        messageId="u1",
        text='Add these [[tool calculator {"expression": "2+3"}]]',
        body={"agent": "researcher"},
    )
    tools = [p for p in result["parts"] if p["type"] == "dynamic-tool"]
    assert len(tools) == 1
    assert tools[0]["toolName"] == "calculator"
    assert tools[0]["input"] == {"expression": "2+3"}
    assert tools[0]["state"] == "output-available"
    assert "calculator returned" in result["text"]
    assert result["text"] == completed_text(base, chat, result["id"])


def test_an_approval_is_asked_and_answered_as_the_sdk_does(base: str) -> None:
    chat = chat_id()
    result = drive(
        base,
        "approval",
        chatId=chat,
        messageId="u1",
        text='Read [[tool fetch_url {"url": "https://example.invalid/"}]]',
        body={"agent": "researcher"},
        approved=False,
    )
    asked, rest = result["asked"], result["rest"]
    assert asked["types"][-3:] == ["tool-approval-request", "finish-step", "finish"]
    assert asked["chunks"][-1]["finishReason"] == "tool-calls"
    call = next(p for p in asked["parts"] if p["type"] == "dynamic-tool")
    assert call["state"] == "approval-requested" and call["toolName"] == "fetch_url"
    # The answer went on in the same message, after the person's no.
    assert rest["id"] == asked["id"]
    answered = next(p for p in rest["parts"] if p["type"] == "dynamic-tool")
    assert answered["state"] == "output-denied"
    assert rest["types"][-1] == "finish"
    assert rest["text"] == completed_text(base, chat, rest["id"])
    signals = [e for e in events(base, chat) if e["type"] == "signal.received"]
    assert [s["payload"]["approved"] for s in signals] == [False]


def test_a_failed_run_is_an_error_with_its_reason(base: str) -> None:
    chat = chat_id()
    result = drive(
        base,
        "tool",
        chatId=chat,
        messageId="u1",
        text='[[tool calculator {"expression": "1+1"}]] [[handoff writer]]',
        body={"agent": "researcher"},
    )
    failed = [e for e in events(base, chat) if e["type"] == "run.failed"]
    assert len(failed) == 1
    assert result["errors"] == [failed[0]["reason"]]
    assert "error" in result["types"]


def test_a_client_cut_off_mid_answer_resumes_with_the_same_text(base: str) -> None:
    chat = chat_id()
    result = drive(base, "resume", chatId=chat, messageId="u1", text="A long one, please")
    cut, resumed = result["cutOff"], result["resumed"]
    assert cut["cut"] and cut["types"][-1] == "text-delta"
    assert resumed["id"] == cut["id"]
    assert resumed["types"][-1] == "finish"
    assert resumed["text"] == completed_text(base, chat, resumed["id"])
    assert len(resumed["text"]) > len(cut["text"])
    # Nothing runs now: the resume endpoint says so (204, the SDK's null).
    assert drive(base, "idle", chatId=chat) == {"stream": None}


def test_stop_cancels_the_answer_and_the_stream_ends_with_abort(base: str) -> None:
    chat = chat_id()
    result = drive(base, "stop", chatId=chat, messageId="u1", text="Go on and on")
    assert result["stop"]["status"] == 202
    assert len(result["stop"]["body"]["cancelled"]) == 1
    assert result["types"][-1] == "abort"
    # `abort` is sent for the run's run.cancelled: it is in the log already.
    cancelled = [e for e in events(base, chat) if e["type"] == "run.cancelled"]
    assert [e["run_id"] for e in cancelled] == result["stop"]["body"]["cancelled"]


def test_bad_requests_are_refused_and_write_nothing(base: str) -> None:
    chat = chat_id()
    only_assistant = [{"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "hi"}]}]
    refused = drive(base, "refused", chatId=chat, messages=only_assistant)
    assert "the last message must be the user's new message" in refused["threw"]
    for body, code in (
        ({"id": "bad id!", "messages": [_user("x")]}, 422),
        ({"id": chat, "messages": []}, 422),
        ({"id": chat, "messages": [_user("x" * 40_000)]}, 413),
        ({"id": chat, "messages": [_user("   ")]}, 422),
        ({"id": chat, "messages": [{**_user("x"), "id": "no spaces allowed"}]}, 422),
        ({"id": chat, "messages": [_user("x")], "agent": "nobody"}, 422),
    ):
        response = httpx.post(f"{base}/api/chat", json=body)
        assert response.status_code == code, (body, response.text)
        assert response.json()["detail"]
    assert httpx.get(f"{base}/api/threads/{chat}").status_code == 404  # never created
    assert httpx.get(f"{base}/api/chat/{chat}/stream").status_code == 404
    assert httpx.get(f"{base}/api/chat/bad%20id/stream").status_code == 422
    assert httpx.post(f"{base}/api/chat/{chat}/stop").status_code == 404


def _user(text: str) -> dict[str, Any]:
    return {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}


async def test_tokens_owners_and_the_send_limit_hold_for_chats(
    real_backend: Backend, settings: Settings
) -> None:
    limited = dataclasses.replace(settings, auth="tokens", sends_per_minute=1)
    async with running_system(real_backend, limited) as system:
        users = system.runtime.auth.users
        owner = await users.add(f"owner-{id(system)}")
        stranger = await users.add(f"stranger-{id(system)}")
        as_owner = {"Authorization": f"Bearer {owner}"}
        as_stranger = {"Authorization": f"Bearer {stranger}"}
        chat = chat_id()
        body = {"id": chat, "messages": [_user("hello")]}
        assert (await system.http.post("/api/chat", json=body)).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await system.http.post("/api/chat", json=body, headers=bad)).status_code == 401
        async with system.http.stream("POST", "/api/chat", json=body, headers=as_owner) as r:
            assert r.status_code == 200
            assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
            assert r.headers["content-type"].startswith("text/event-stream")
            raw = b"".join([part async for part in r.aiter_bytes()])
        assert raw.endswith(b"data: [DONE]\n\n")
        # Another's chat is a missing one, on every route; nothing is written for them.
        version = await system.runtime.store.version(chat)
        other = {"id": chat, "messages": [{**_user("mine now"), "id": "u2"}]}
        for method, path, payload in (
            ("POST", "/api/chat", other),
            ("GET", f"/api/chat/{chat}/stream", None),
            ("POST", f"/api/chat/{chat}/stop", None),
        ):
            answer = await system.http.request(method, path, json=payload, headers=as_stranger)
            assert answer.status_code == 404, answer.text
            assert chat in answer.json()["detail"]
        # The owner's second new message in the minute passes the send limit.
        again = await system.http.post("/api/chat", json=other, headers=as_owner)
        assert again.status_code == 429, again.text
        assert "Retry-After" in again.headers
        assert await system.runtime.store.version(chat) == version
        # Nothing runs: the resume endpoint says 204.
        idle = await system.http.get(f"/api/chat/{chat}/stream", headers=as_owner)
        assert idle.status_code == 204
