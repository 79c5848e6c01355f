"""Model usage: folded into the thread view (and each run), stored, and served by GET /api/usage."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from consumers.agents import agent_named
from consumers.llm.base import Prompt
from consumers.llm.parts import Part
from consumers.llm.scripted import ScriptedLLM
from projections.projector import Projector
from projections.thread_view import (
    SCHEMA_VERSION,
    ThreadView,
    Usage,
    UsageTotals,
    fold,
    fold_into,
    tally,
)
from projections.views import ViewStore
from service import commands
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ConfigError, ProviderError
from slipstream.keys import new_run_id
from slipstream.store import Append, EventStore, Stored
from tests.harness import System, running_system

RUN_A, RUN_B = "t1.aaaaaa", "t1.bbbbbb"


def used(run_id: str, agent: str, model: str, i: int, o: int, attempt: int = 1) -> ev.ModelUsage:
    return ev.ModelUsage(
        run_id=run_id,
        agent=agent,
        model=model,
        input_tokens=i,
        output_tokens=o,
        cache_read_tokens=i // 10,
        cache_write_tokens=1,
        attempt=attempt,
    )


def history() -> list[ev.Event]:
    """Two runs, two agents, two models; run A fails once (its call still counts) and retries."""
    return [
        ev.ThreadCreated(title="t"),
        ev.MessageSent(message_id="m1", content="q", run_id=RUN_A),
        ev.RunRequested(run_id=RUN_A, message_id="m1", reply_id="r1", agent="researcher"),
        ev.RunStarted(run_id=RUN_A, attempt=1, worker="w:1:a", token=1),
        used(RUN_A, "researcher", "claude-a", 100, 7),
        ev.RunRetrying(run_id=RUN_A, attempt=1, reason="overloaded", delay_ms=5000),
        ev.RunStarted(run_id=RUN_A, attempt=2, worker="w:1:a", token=2),
        used(RUN_A, "researcher", "claude-a", 100, 20, attempt=2),
        # A hand-off within run A: the next call is the writer's, on another model.
        used(RUN_A, "writer", "claude-b", 130, 30, attempt=2),
        ev.RunCompleted(run_id=RUN_A),
        ev.MessageSent(message_id="m2", content="again", run_id=RUN_B),
        ev.RunRequested(run_id=RUN_B, message_id="m2", reply_id="r2", agent="writer"),
        ev.RunStarted(run_id=RUN_B, attempt=1, worker="w:1:a", token=1),
        used(RUN_B, "writer", "claude-b", 200, 40),
        ev.RunCompleted(run_id=RUN_B),
    ]


def stored(events: list[ev.Event]) -> list[Stored]:
    return [Stored(f"1000-{i}", e) for i, e in enumerate(events)]


def totals(i: int, o: int, cr: int, cw: int, calls: int) -> UsageTotals:
    return UsageTotals(
        input_tokens=i, output_tokens=o, cache_read_tokens=cr, cache_write_tokens=cw, calls=calls
    )


def test_every_call_counts_once_by_agent_and_model_and_run() -> None:
    items = stored(history())
    empty = ThreadView.empty("t1", "ss:{p00}:thread:t1")
    view = fold(empty, items)
    assert view.usage == Usage(
        total=totals(530, 97, 53, 4, 4),
        by_agent={"researcher": totals(200, 27, 20, 2, 2), "writer": totals(330, 70, 33, 2, 2)},
        by_model={"claude-a": totals(200, 27, 20, 2, 2), "claude-b": totals(330, 70, 33, 2, 2)},
    )
    assert view.runs[RUN_A].usage == totals(330, 57, 33, 3, 3)
    assert view.runs[RUN_B].usage == totals(200, 40, 20, 1, 1)
    # Folding the same events again (a replay after a reconnect) counts nothing twice.
    assert fold(view, items).usage == view.usage
    # Folded in two halves, from a snapshot, the same.
    assert fold(fold(empty, items[:6]), items[6:]) == view
    assert tally(e.event for e in items) == view.usage


def test_one_agents_tally_keeps_only_its_calls() -> None:
    writer = tally(history(), agent="writer")
    assert writer.total == totals(330, 70, 33, 2, 2)
    assert set(writer.by_agent) == {"writer"} and set(writer.by_model) == {"claude-b"}
    assert tally(history(), agent="nobody") == Usage()


def test_a_view_without_usage_shows_zeros() -> None:
    view = ThreadView.empty("t1", "ss:{p00}:thread:t1")
    assert view.model_dump(mode="json")["usage"] == {
        "total": {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "calls": 0,
        },
        "by_agent": {},
        "by_model": {},
    }


def test_a_usage_event_changes_its_run_and_no_message() -> None:
    events = history()
    view = fold(ThreadView.empty("t1", "ss:{p00}:thread:t1"), stored(events[:4]))
    changes = fold_into(view, [Stored("1000-4", events[4])])
    assert (changes.events, changes.runs, changes.messages) == (1, {RUN_A}, set())


async def test_the_stored_view_keeps_usage(store: EventStore) -> None:
    thread_id, _ = await commands.create_thread(store, "usage")
    run_id = new_run_id(thread_id)
    opening: list[ev.Event] = [
        ev.MessageSent(message_id="m1", content="q", agent="assistant", run_id=run_id),
        ev.RunRequested(run_id=run_id, message_id="m1", reply_id="r1", agent="assistant"),
        ev.RunStarted(run_id=run_id, attempt=1, worker="w:1:a", token=1),
    ]
    await store.append(Append(thread_id, opening))
    projector = Projector(store.backend, store, "p-usage")
    await projector.project_thread(thread_id)
    for n in range(3):
        await store.append(Append(thread_id, [used(run_id, "assistant", "m", 10 + n, 5)]))
        assert await projector.project_thread(thread_id) is not None
    loaded = await ViewStore(store).load(thread_id)
    assert loaded is not None
    assert loaded.usage.total == totals(33, 15, 3, 3, 3)
    assert loaded.runs[run_id].usage == loaded.usage.by_agent["assistant"]
    assert loaded == fold(
        ThreadView.empty(thread_id, store.stream_key(thread_id)), await store.read(thread_id)
    )


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, settings) as running:
        yield running


async def test_get_usage_of_a_thread_and_of_one_agent(system: System) -> None:
    thread_id = await system.new_thread()
    first = await system.send(thread_id, "How do streams work?", agent="assistant")
    await system.wait_for_run(thread_id, first["run_id"])
    second = await system.send(thread_id, "And consumer groups?", agent="writer")
    view = await system.wait_for_run(thread_id, second["run_id"])

    response = await system.http.get("/api/usage", params={"thread_id": thread_id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["thread_id"] == thread_id and body["agent"] is None
    assert {k: body[k] for k in ("total", "by_agent", "by_model")} == view["usage"]
    assert body["total"]["calls"] == 2 and body["total"]["output_tokens"] > 0
    assert set(body["by_agent"]) == {"assistant", "writer"}
    runs = view["runs"]
    assert (
        sum(run["usage"]["input_tokens"] for run in runs.values())
        == (body["total"]["input_tokens"])
    )

    response = await system.http.get(
        "/api/usage", params={"thread_id": thread_id, "agent": "writer"}
    )
    assert response.status_code == 200, response.text
    writer = response.json()
    assert writer["agent"] == "writer"
    assert writer["total"] == body["by_agent"]["writer"] == runs[second["run_id"]]["usage"]
    assert set(writer["by_agent"]) == {"writer"}


async def test_get_usage_refuses_what_it_cannot_answer(system: System) -> None:
    response = await system.http.get("/api/usage")
    assert response.status_code == 422
    assert response.json()["detail"] == "query.thread_id: Field required"
    response = await system.http.get("/api/usage", params={"thread_id": "nosuchthread"})
    assert response.status_code == 404
    assert "does not exist" in response.text
    response = await system.http.get("/api/usage", params={"thread_id": "bad id!"})
    assert response.status_code == 422


def test_the_token_budget_setting() -> None:
    assert Settings.from_env({}).thread_token_budget is None
    assert Settings.from_env({"SLIPSTREAM_THREAD_TOKEN_BUDGET": "500"}).thread_token_budget == 500
    with pytest.raises(ConfigError, match="SLIPSTREAM_THREAD_TOKEN_BUDGET=0 must be at least 1"):
        Settings.from_env({"SLIPSTREAM_THREAD_TOKEN_BUDGET": "0"})


async def test_a_thread_past_its_token_budget_fails_its_next_run_before_the_call(
    backend: Backend, settings: Settings
) -> None:
    budgeted = dataclasses.replace(settings, thread_token_budget=10)
    async with running_system(backend, budgeted) as system:
        thread_id = await system.new_thread()
        first = await system.send(thread_id, "How do streams work?")
        view = await system.wait_for_run(thread_id, first["run_id"])
        assert view["runs"][first["run_id"]]["status"] == "completed"  # 0 used when it called
        spent = view["usage"]["total"]["input_tokens"] + view["usage"]["total"]["output_tokens"]
        assert spent >= 10
        second = await system.send(thread_id, "And consumer groups?")
        view = await system.wait_for_run(thread_id, second["run_id"])
    run = view["runs"][second["run_id"]]
    assert run["status"] == "failed"
    assert run["reason"] == f"thread token budget of 10 reached ({spent} used)"
    assert run["usage"]["calls"] == 0 and view["usage"]["total"]["calls"] == 1


async def test_a_view_stored_before_usage_is_rebuilt_with_it(store: EventStore) -> None:
    thread_id, _ = await commands.create_thread(store, "old")
    run_id = new_run_id(thread_id)
    await store.append(
        Append(
            thread_id,
            [
                ev.MessageSent(message_id="m1", content="q", agent="assistant", run_id=run_id),
                ev.RunRequested(run_id=run_id, message_id="m1", reply_id="r1", agent="assistant"),
                used(run_id, "assistant", "m", 10, 5),
            ],
        )
    )
    await Projector(store.backend, store, "p-old").project_thread(thread_id)
    # As schema 2 stored it: the same fields, without usage.
    key = store.keys.partition(thread_id).view(thread_id)
    await store.redis.hset(key, "schema", "2")
    views = ViewStore(store)
    assert await views.load(thread_id) is None
    assert (await views.current(thread_id)).usage.total == totals(10, 5, 1, 1, 1)
    assert await store.redis.hget(key, "schema") == str(SCHEMA_VERSION)


class SpendsThenFailsOnce(ScriptedLLM):
    """The writer's first call streams its whole turn, usage included, then fails retryably:
    tokens spent on a call that failed, then a retry, then a hand-off to critic."""

    def __init__(self) -> None:
        super().__init__(words=12, delay_ms=1)
        self.failed = False

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        async for part in super().stream(prompt):
            yield part
        if prompt.system == agent_named("writer").system and not self.failed:
            self.failed = True
            raise ProviderError("overloaded", retryable=True)


async def test_usage_counts_every_call_across_a_retry_and_a_handoff(
    backend: Backend, settings: Settings
) -> None:
    quick = dataclasses.replace(settings, retry_base_ms=20, retry_max_ms=50)
    async with running_system(backend, quick, llm=SpendsThenFailsOnce()) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "draft it [[handoff critic]]", agent="writer")
        view = await system.wait_for_run(thread_id, sent["run_id"])
        events = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
        by_writer = await system.http.get(
            "/api/usage", params={"thread_id": thread_id, "agent": "writer"}
        )
    history = [e["event"] for e in events if e["event"].get("run_id") == sent["run_id"]]
    kinds = [e["type"] for e in history]
    assert "run.retrying" in kinds and "agent.handoff" in kinds
    calls = [(e["agent"], e["attempt"]) for e in history if e["type"] == "model.usage"]
    assert calls == [("writer", 1), ("writer", 2), ("critic", 2)]
    spent = [e for e in history if e["type"] == "model.usage"]
    usage = view["usage"]
    assert usage["total"]["calls"] == 3
    for field in ("input_tokens", "output_tokens"):
        assert usage["total"][field] == sum(e[field] for e in spent) > 0
        assert usage["by_agent"]["writer"][field] == sum(
            e[field] for e in spent if e["agent"] == "writer"
        )
    assert usage["by_agent"]["writer"]["calls"] == 2
    assert usage["by_agent"]["critic"]["calls"] == 1
    assert view["runs"][sent["run_id"]]["usage"] == usage["total"]
    assert by_writer.json()["total"] == usage["by_agent"]["writer"]
