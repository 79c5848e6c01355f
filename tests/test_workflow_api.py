"""The shipped workflows end to end over HTTP: research, and approval with a person."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from consumers.llm.scripted import scripted_reply
from consumers.workflows.examples import analyze
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, run_of, running_system, wait_status
from tests.waits import until


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, settings) as running:
        yield running


async def test_agents_lists_chat_agents_and_workflows(system: System) -> None:
    agents = {a["name"]: a for a in (await system.http.get("/api/agents")).json()}
    assert agents["assistant"]["kind"] == "chat"
    assert agents["research"]["kind"] == "workflow"
    assert agents["approval"]["signals"] == ["approval"]


async def test_research_streams_its_answer_between_two_steps(
    system: System, settings: Settings
) -> None:
    thread_id = await system.new_thread()
    question = "How do durable workflows survive restarts?"
    accepted = await system.send(thread_id, question, agent="research")
    run = await wait_status(system, thread_id, accepted["run_id"], "completed")
    assert [(s["name"], s["kind"], s["status"]) for s in run["steps"]] == [
        ("analyze", "step", "completed"),
        ("generate", "agent", "completed"),
        ("finalize", "step", "completed"),
    ]
    topics = analyze(question).topics
    prompt = f"{question}\n\nCover these topics: {', '.join(topics)}."
    reply = (await system.view(thread_id))["messages"][-1]
    assert (reply["agent"], reply["status"]) == ("research", "completed")
    assert reply["content"] == scripted_reply(prompt, settings.scripted_words)
    assert run["result"]["topics"] == topics
    assert run["result"]["words"] == settings.scripted_words
    one = (await system.http.get(f"/api/runs/{accepted['run_id']}")).json()
    assert one["steps"] == run["steps"]


async def test_approval_waits_for_a_person_revises_then_publishes(system: System) -> None:
    thread_id = await system.new_thread()
    accepted = await system.send(thread_id, "Announce the release", agent="approval")
    run_id = accepted["run_id"]
    run = await wait_status(system, thread_id, run_id, "waiting")
    assert run["waiting_for"] == "approval"

    async def listed() -> bool:
        waiting = (await system.http.get("/api/runs", params={"status": "waiting"})).json()
        return run_id in [r["id"] for r in waiting]

    await until(listed, within=10)
    wrong = await system.http.post(f"/api/runs/{run_id}/signal", json={"name": "publish"})
    assert wrong.status_code == 409 and "it takes: approval" in wrong.json()["detail"]

    rejected = await system.http.post(
        f"/api/runs/{run_id}/signal",
        json={"name": "approval", "payload": {"approved": False, "feedback": "shorter"}},
    )
    assert rejected.status_code == 202 and rejected.json()["was"] == "waiting"

    async def revised() -> bool:
        view = await system.view(thread_id)
        drafts = [m for m in view["messages"] if m["role"] == "assistant"]
        return len(drafts) == 2 and view["runs"][run_id]["status"] == "waiting"

    await until(revised, within=20)
    approved = await system.http.post(
        f"/api/runs/{run_id}/signal", json={"name": "approval", "payload": {"approved": True}}
    )
    assert approved.status_code == 202
    run = await wait_status(system, thread_id, run_id, "completed")
    assert run["result"]["status"] == "published" and run["result"]["revisions"] == 1
    assert run["result"]["idempotency_key"].startswith(f"{run_id}:")
    names = [s["name"] for s in run["steps"]]
    assert names == ["draft", "wait:approval", "revise", "wait:approval", "publish"]
    late = await system.http.post(f"/api/runs/{run_id}/signal", json={"name": "approval"})
    assert late.status_code == 409 and "completed" in late.json()["detail"]


async def test_a_waiting_workflow_lets_the_thread_go_on(system: System) -> None:
    thread_id = await system.new_thread()
    waiting = await system.send(thread_id, "Draft it", agent="approval")
    await wait_status(system, thread_id, waiting["run_id"], "waiting")
    chat = await system.send(thread_id, "meanwhile, a question")
    await wait_status(system, thread_id, chat["run_id"], "completed")
    cancelled = await system.http.post(f"/api/runs/{waiting['run_id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert (await run_of(system, thread_id, waiting["run_id"]))["status"] == "cancelled"


async def test_bad_signals_are_refused(system: System) -> None:
    thread_id = await system.new_thread()
    accepted = await system.send(thread_id, "hi")
    run_id = accepted["run_id"]
    bad_name = await system.http.post(f"/api/runs/{run_id}/signal", json={"name": "has space"})
    assert bad_name.status_code == 422
    assert (
        await system.http.post("/api/runs/t0.abcdef/signal", json={"name": "x"})
    ).status_code == 404
    chat = await system.http.post(f"/api/runs/{run_id}/signal", json={"name": "approval"})
    assert chat.status_code == 409
