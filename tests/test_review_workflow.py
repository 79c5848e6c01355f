"""The shipped `review` workflow: the writer drafts, the critic reviews, the writer revises,
each in a message of its own; journaled turns are not run again after a worker is killed.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers.agents import agent_named
from consumers.llm.base import Prompt
from consumers.llm.parts import Part, TextPart
from consumers.llm.scripted import ScriptedLLM, scripted_reply
from consumers.workflows import WorkflowContext, workflow
from consumers.workflows.engine import turn_message_id
from consumers.workflows.review import draft_prompt, review_prompt, revision_prompt
from slipstream import errors
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import running_system
from tests.ports import free_port
from tests.processes import env_for, processes, spawn, wait_for_status, wait_healthy
from tests.waits import until

WORDS = 30
REQUEST = "An email telling the team the office is closed on Friday."


class RecordingLLM(ScriptedLLM):
    """The scripted model, keeping each prompt it was asked with its agent's name."""

    def __init__(self, *, delay_ms: int = 0) -> None:
        super().__init__(words=WORDS, delay_ms=delay_ms)
        self.asked: list[tuple[str, str]] = []

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        [agent] = [a for a in ("writer", "critic") if agent_named(a).system == prompt.system]
        self.asked.append((agent, prompt.question or ""))
        async for part in super().stream(prompt):
            yield part


def expected_turns(request: str, words: int) -> list[tuple[str, str]]:
    """Each turn's agent and its text, as the scripted model writes them."""
    draft = scripted_reply(draft_prompt(request), words)
    critique = scripted_reply(review_prompt(request, draft), words)
    final = scripted_reply(revision_prompt(request, draft, critique), words)
    return [("writer", draft), ("critic", critique), ("writer", final)]


def answers_of(view: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    return [m for m in view["messages"] if m["run_id"] == run_id and m["role"] == "assistant"]


def events_of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["event"] for e in events if e["event"]["type"] == kind]


async def test_review_is_listed_as_a_workflow(backend: Backend, settings: Settings) -> None:
    async with running_system(backend, settings) as system:
        agents = {a["name"]: a for a in (await system.http.get("/api/agents")).json()}
    assert agents["review"]["kind"] == "workflow"
    assert agents["review"]["description"] == (
        "The writer drafts, the critic reviews the draft, the writer revises it."
    )


async def test_writer_critic_writer_each_answer_in_a_message_of_their_own(
    backend: Backend, settings: Settings
) -> None:
    llm = RecordingLLM()
    async with running_system(backend, settings, llm=llm) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, REQUEST, agent="review")
        view = await system.wait_for_run(thread_id, sent["run_id"])
        events = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
    run_id = sent["run_id"]
    run = view["runs"][run_id]
    assert (run["agent"], run["status"]) == ("review", "completed")
    answers = answers_of(view, run_id)
    turns = expected_turns(REQUEST, WORDS)
    assert [(m["agent"], m["content"]) for m in answers] == turns
    assert [m["status"] for m in answers] == ["completed"] * 3
    # The draft is the run's reply; the later turns' messages come from the run and position.
    assert [m["id"] for m in answers] == [
        run["reply_id"],
        turn_message_id(run_id, 2),
        turn_message_id(run_id, 3),
    ]
    # Each agent answered with its own system prompt; the critic saw the draft, and
    # the writer's revision both the draft and the review.
    draft, critique, _ = (text for _, text in turns)
    assert [agent for agent, _ in llm.asked] == ["writer", "critic", "writer"]
    assert draft in llm.asked[1][1]
    assert draft in llm.asked[2][1] and critique in llm.asked[2][1]
    assert [(s["name"], s["kind"], s["status"]) for s in run["steps"]] == [
        ("draft", "agent", "completed"),
        ("review", "agent", "completed"),
        ("revise", "agent", "completed"),
    ]
    assert [u["agent"] for u in events_of(events, "model.usage")] == ["writer", "critic", "writer"]
    assert set(view["usage"]["by_agent"]) == {"writer", "critic"}
    assert run["result"]["turns"] == ["writer", "critic", "writer"]


async def test_a_cancel_during_the_review_ends_the_critics_message(
    backend: Backend, settings: Settings
) -> None:
    slow = ScriptedLLM(words=400, delay_ms=5)
    async with running_system(backend, settings, llm=slow) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, REQUEST, agent="review")
        run_id = sent["run_id"]

        async def critic_streams() -> bool:
            answers = answers_of(await system.view(thread_id), run_id)
            return [(m["agent"], m["status"]) for m in answers] == [
                ("writer", "completed"),
                ("critic", "streaming"),
            ]

        await until(critic_streams, within=30)
        assert (await system.http.post(f"/api/runs/{run_id}/cancel")).status_code == 202
        view = await system.wait_for_run(thread_id, run_id)
    assert view["runs"][run_id]["status"] == "cancelled"
    answers = answers_of(view, run_id)
    assert [(m["agent"], m["status"]) for m in answers] == [
        ("writer", "completed"),
        ("critic", "cancelled"),
    ]
    assert answers[1]["content"]  # what the critic had written stays


class CriticOverloadedOnceLLM(RecordingLLM):
    """The critic's first answer breaks off, after a sentence, with an error a retry mends."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        if prompt.system == agent_named("critic").system and not self.failed:
            self.failed = True
            self.asked.append(("critic", prompt.question or ""))
            yield TextPart("Half a review. ")  # a sentence end: written at once
            raise errors.ProviderError("overloaded", retryable=True)
        async for part in super().stream(prompt):
            yield part


async def test_a_model_error_mid_review_retries_from_the_turn_it_broke(
    backend: Backend, settings: Settings
) -> None:
    quick = dataclasses.replace(settings, retry_base_ms=20, retry_max_ms=50)
    llm = CriticOverloadedOnceLLM()
    async with running_system(backend, quick, llm=llm) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, REQUEST, agent="review")
        view = await system.wait_for_run(thread_id, sent["run_id"])
        events = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
    run = view["runs"][sent["run_id"]]
    assert (run["status"], run["attempt"]) == ("completed", 2)
    [retrying] = events_of(events, "run.retrying")
    assert retrying["reason"] == "model error: overloaded"
    # The draft was journaled: the writer was not asked for it again.
    assert [agent for agent, _ in llm.asked] == ["writer", "critic", "critic", "writer"]
    answers = answers_of(view, sent["run_id"])
    assert [(m["agent"], m["content"]) for m in answers] == expected_turns(REQUEST, WORDS)
    half = [e for e in events_of(events, "message.delta") if e["text"] == "Half a review. "]
    assert [(e["message_id"], e["attempt"]) for e in half] == [(answers[1]["id"], 1)]


@workflow("test_unknown_speaker")
async def unknown_speaker(ctx: WorkflowContext, message: str) -> str:
    return await ctx.agent_turn("nobody", message)


async def test_an_agent_turn_of_an_agent_not_in_the_file_fails_the_run(
    backend: Backend, settings: Settings
) -> None:
    async with running_system(backend, settings) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "hello", agent="test_unknown_speaker")
        view = await system.wait_for_run(thread_id, sent["run_id"])
    run = view["runs"][sent["run_id"]]
    assert (run["status"], run["reason"]) == (
        "failed",
        "workflow 'test_unknown_speaker': agent_turn names 'nobody', which is not in the "
        "agents file (its agents: assistant, researcher, writer, critic)",
    )


def wait_for_view(
    base: str, thread_id: str, condition: Callable[[dict[str, Any]], bool], within: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = httpx.get(f"{base}/api/threads/{thread_id}", timeout=5).json()
        if condition(view):
            return view
        time.sleep(0.05)
    raise AssertionError(f"the view never got there: {view.get('messages')}")


@pytest.mark.slow
def test_a_worker_killed_during_the_review_leaves_three_whole_messages(
    redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    words = 80
    env = env_for(
        PORT=str(port),
        REDIS_URL=redis_url,
        SLIPSTREAM_SCRIPTED_DELAY_MS="10",
        SLIPSTREAM_SCRIPTED_WORDS=str(words),
        SLIPSTREAM_LEASE_MS="1000",
    )
    base = f"http://127.0.0.1:{port}"
    with processes() as running:
        web = spawn("service", env, tmp_path / "web.log")
        first = spawn("consumers", env, tmp_path / "worker1.log")
        running += [web, first, spawn("projections", env, tmp_path / "projector.log")]
        wait_healthy(port, web)
        thread_id = httpx.post(f"{base}/api/threads", json={}).json()["id"]
        sent = httpx.post(
            f"{base}/api/threads/{thread_id}/messages",
            json={"content": REQUEST, "agent": "review"},
        )
        assert sent.status_code == 202, sent.text
        run_id = sent.json()["run_id"]

        def critic_streams(view: dict[str, Any]) -> bool:
            answers = answers_of(view, run_id)
            return len(answers) == 2 and bool(answers[1]["content"])

        wait_for_view(base, thread_id, critic_streams)
        os.kill(first.pid, signal.SIGKILL)  # mid-review, no goodbye
        first.wait()
        running.append(spawn("consumers", env, tmp_path / "worker2.log"))
        view = wait_for_status(base, thread_id, run_id, {"completed", "failed", "cancelled"})
        events = httpx.get(f"{base}/api/threads/{thread_id}/events", timeout=5).json()
    run = view["runs"][run_id]
    assert (run["status"], run["attempt"]) == ("completed", 2)
    answers = answers_of(view, run_id)
    # Whole, once each: the critic's second attempt replaced its first one's text.
    assert [(m["agent"], m["content"]) for m in answers] == expected_turns(REQUEST, words)
    assert [m["status"] for m in answers] == ["completed"] * 3
    # The draft was journaled, so the second attempt did not write it again.
    completed = [e["message_id"] for e in events_of(events, "message.completed")]
    assert completed == [m["id"] for m in answers]
    draft_deltas = [
        e for e in events_of(events, "message.delta") if e["message_id"] == run["reply_id"]
    ]
    assert {e["attempt"] for e in draft_deltas} == {1}
    critic_deltas = [
        e for e in events_of(events, "message.delta") if e["message_id"] == answers[1]["id"]
    ]
    assert {e["attempt"] for e in critic_deltas} == {1, 2}
