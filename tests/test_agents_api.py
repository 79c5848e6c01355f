"""The agents over HTTP: GET /api/agents, and a message with no agent routed as it is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, running_system


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, settings) as running:
        yield running


async def events_of(system: System, thread_id: str) -> list[dict[str, Any]]:
    response = await system.http.get(f"/api/threads/{thread_id}/events")
    assert response.status_code == 200, response.text
    stored: list[dict[str, Any]] = response.json()
    return stored


async def test_agents_are_listed_with_their_tools(system: System) -> None:
    listed = (await system.http.get("/api/agents")).json()
    agents = {a["name"]: a for a in listed}
    researcher = agents["researcher"]
    assert researcher["kind"] == "chat"
    assert researcher["tools"] == ["calculator", "now", "search_thread", "fetch_url"]
    assert researcher["approve"] == ["fetch_url"]
    assert researcher["handoffs"] == ["writer"]
    assert researcher["description"] == "Finds facts and works things out, with tools."
    assert [a["name"] for a in listed if a["default"]] == ["assistant"]
    assert {"writer", "critic"} <= set(agents)
    assert agents["approval"]["kind"] == "workflow" and agents["approval"]["tools"] == []


@pytest.mark.parametrize(
    ("content", "agent", "by", "reason"),
    [
        (
            "How many moons does Mars have?",
            "researcher",
            "rule",
            "researcher's rule (?i)\\b(research|look up|find out|how many|how much|calculate|"
            "what time)\\b matched 'How many'",
        ),
        ("@critic is this clear?", "critic", "mention", "mentioned @critic"),
        ("Hello there", "assistant", "default", "no pick, mention or rule matched"),
    ],
)
async def test_a_message_with_no_agent_is_routed_in_the_same_append(
    system: System, content: str, agent: str, by: str, reason: str
) -> None:
    thread_id = await system.new_thread()
    accepted = await system.send(thread_id, content)
    stored = await events_of(system, thread_id)
    sent = next(i for i, s in enumerate(stored) if s["event"]["type"] == "message.sent")
    message, routed, requested = (s["event"] for s in stored[sent : sent + 3])
    assert message["agent"] == agent and message["message_id"] == accepted["message_id"]
    assert routed == {
        "type": "agent.routed",
        "event_id": routed["event_id"],
        "message_id": accepted["message_id"],
        "agents": [agent],
        "by": by,
        "reason": reason,
    }
    assert requested["type"] == "run.requested" and requested["agent"] == agent
    view = await system.wait_for_run(thread_id, accepted["run_id"])
    assert view["runs"][accepted["run_id"]]["status"] == "completed"
    assert view["messages"][-1]["agent"] == agent


async def test_a_message_sent_to_an_agent_is_not_routed(system: System) -> None:
    thread_id = await system.new_thread()
    await system.send(thread_id, "How many moons does Mars have?", agent="writer")
    types = [s["event"]["type"] for s in await events_of(system, thread_id)]
    assert "agent.routed" not in types
    assert types[1:3] == ["message.sent", "run.requested"]


async def test_a_resent_message_is_routed_once(system: System) -> None:
    thread_id = await system.new_thread()
    first = await system.send(thread_id, "calculate 6*7", client_id="c-1")
    again = await system.send(thread_id, "calculate 6*7", client_id="c-1")
    assert again["duplicate"] and again["run_id"] == first["run_id"]
    types = [s["event"]["type"] for s in await events_of(system, thread_id)]
    assert types.count("agent.routed") == 1 and types.count("message.sent") == 1


async def test_an_unknown_agent_is_still_refused(system: System) -> None:
    thread_id = await system.new_thread()
    response = await system.http.post(
        f"/api/threads/{thread_id}/messages", json={"content": "hi", "agent": "editor"}
    )
    assert response.status_code == 422
    assert "no agent named 'editor'" in response.text
    assert [s["event"]["type"] for s in await events_of(system, thread_id)] == ["thread.created"]
