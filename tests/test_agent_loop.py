"""The agent loop: tools called and journaled, the model called again, one reply message;
usage per model call; errors as results; the round bound; replay on a new attempt; cancel."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from consumers.agent_loop import AgentLoop, Journal, ToolRoundsExceeded
from consumers.agents import Agent
from consumers.answer import AnswerWriter, Attempt
from consumers.handoff import HANDOFF_TOOL
from consumers.llm.base import LLM, ChatMessage, Prompt
from consumers.llm.directives import read_directives
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from consumers.llm.scripted import ScriptedLLM, scripted_reply
from consumers.prompt import tool_specs
from consumers.tools import REGISTRY, ToolRegistry, tool
from service import commands
from slipstream import errors
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.codec import Unreadable
from slipstream.config import Settings
from slipstream.errors import ProviderError
from slipstream.store import EventStore
from tests.harness import running_system

WORDS = 12


def agent(*tools: str, approve: tuple[str, ...] = ()) -> Agent:
    return Agent(name="helper", description="d", system="s", tools=tools, approve=approve)


async def attempt_for(store: EventStore, attempt: int = 1) -> Attempt:
    """A run this test holds with token `attempt`, as a worker's claim would leave it."""
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hi", "helper")
    await hold(store, thread_id, sent.run_id, attempt)
    return Attempt(thread_id, sent.run_id, "m-reply", "helper", attempt, attempt, "")


async def hold(store: EventStore, thread_id: str, run_id: str, token: int) -> None:
    await store.redis.hset(store.keys.partition(thread_id).run(run_id), "token", str(token))


def prompt(question: str, for_agent: Agent, registry: ToolRegistry = REGISTRY) -> Prompt:
    return Prompt(
        system="s",
        messages=(ChatMessage("user", question),),
        question=question,
        tools=tool_specs(for_agent, registry),
    )


async def own_events(store: EventStore, attempt: Attempt) -> list[ev.Event]:
    """The run's events after its request."""
    events: list[ev.Event] = []
    for stored in await store.read(attempt.thread_id):
        event = stored.event
        if isinstance(event, Unreadable | ev.RunRequested | ev.MessageSent):
            continue
        if getattr(event, "run_id", None) == attempt.run_id:
            events.append(event)
    return events


async def answer(
    store: EventStore,
    attempt: Attempt,
    question: str,
    for_agent: Agent,
    *,
    registry: ToolRegistry = REGISTRY,
    llm: LLM | None = None,
    journal: Journal | None = None,
    max_rounds: int = 8,
    cancelled: asyncio.Event | None = None,
) -> str:
    """Run the loop and complete the answer as the runner does; returns the whole text."""
    writer = AnswerWriter(store, attempt, flush_ms=50)
    loop = AgentLoop(
        store,
        llm or ScriptedLLM(words=WORDS, delay_ms=0),
        writer,
        for_agent,
        max_rounds=max_rounds,
        journal=journal or Journal({}, {}),
        registry=registry,
    )
    usage = await loop.answer(prompt(question, for_agent, registry), cancelled or asyncio.Event())
    return await writer.complete(lambda _t: [*usage, ev.RunCompleted(run_id=attempt.run_id)])


def answered(question: str) -> str:
    return scripted_reply(read_directives(question).text, WORDS)


async def test_two_tools_in_one_turn_then_one_answer(store: EventStore) -> None:
    registry = ToolRegistry()

    @tool(registry=registry)
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    @tool(registry=registry)
    async def shout(text: str) -> str:
        """Shout."""
        return text.upper()

    attempt = await attempt_for(store)
    question = 'go [[tool add {"a": 2, "b": 3}]] [[tool shout {"text": "hi"}]]'
    text = await answer(store, attempt, question, agent("add", "shout"), registry=registry)

    assert text == 'add returned 5. shout returned "HI". ' + answered(question)
    events = await own_events(store, attempt)
    kinds = [e.type for e in events if e.type != "message.delta"]
    assert kinds == [
        "model.usage",
        "tool.called",
        "tool.result",
        "tool.called",
        "tool.result",
        "message.completed",
        "model.usage",  # the last call's usage goes out with the completion
        "run.completed",
    ]
    results = [(e.call_id, e.result) for e in events if isinstance(e, ev.ToolResult)]
    called = [(e.call_id, e.tool, e.args) for e in events if isinstance(e, ev.ToolCalled)]
    assert [r for _, r in results] == [5, "HI"]
    assert [c[1:] for c in called] == [("add", {"a": 2, "b": 3}), ("shout", {"text": "hi"})]
    assert [c[0] for c in called] == [r[0] for r in results]
    usage = [e for e in events if isinstance(e, ev.ModelUsage)]
    assert {(u.agent, u.model, u.attempt) for u in usage} == {("helper", "scripted", 1)}
    assert usage[0].output_tokens == 0 and usage[1].output_tokens == len(text.split())


async def test_bad_calls_come_back_as_error_results_and_the_model_goes_on(
    store: EventStore,
) -> None:
    attempt = await attempt_for(store)
    question = (
        'x [[tool calculator {"expr": "1"}]] [[tool ghost {}]] [[tool now {}]]'
        ' [[tool fetch_url {"link": "https://example.com"}]]'
    )
    # ghost is the agent's but no tool of the registry; now is a tool, but not the agent's;
    # fetch_url needs approval, but no person is asked about a call that could not run.
    text = await answer(
        store, attempt, question, agent("calculator", "ghost", "fetch_url", approve=("fetch_url",))
    )

    errors_seen = {
        e.call_id: e.result
        for e in await own_events(store, attempt)
        if isinstance(e, ev.ToolResult)
    }
    results = list(errors_seen.values())
    assert all(
        isinstance(e, ev.ToolResult) and e.is_error
        for e in await own_events(store, attempt)
        if e.type == "tool.result"
    )
    assert "invalid arguments for tool 'calculator'" in str(results[0])
    assert "unknown tool 'ghost'" in str(results[1])
    assert (
        results[2]
        == "tool 'now' is not one of helper's tools (its tools: calculator, ghost, fetch_url)"
    )
    assert "invalid arguments for tool 'fetch_url'" in str(results[3])
    assert text.endswith(answered(question))
    assert text.startswith("calculator returned ")


class LoopingLLM:
    """Asks for the calculator on every call, however many results it has seen."""

    name = "looping"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        self.calls += 1
        yield ToolCallPart(f"call_{self.calls}", "calculator", {"expression": "1+1"})
        yield UsagePart(1, 1, 0, 0, "")
        yield StopPart("tool_use")


async def test_past_the_round_bound_the_loop_stops(store: EventStore) -> None:
    attempt = await attempt_for(store)
    llm = LoopingLLM()
    with pytest.raises(ToolRoundsExceeded, match="after 2 rounds"):
        await answer(store, attempt, "q", agent("calculator"), llm=llm, max_rounds=2)
    assert llm.calls == 3
    events = await own_events(store, attempt)
    assert [e.type for e in events].count("tool.result") == 2
    # A provider that names no model: the usage names the provider.
    assert {e.model for e in events if isinstance(e, ev.ModelUsage)} == {"looping"}


async def test_the_runner_fails_a_run_past_the_round_bound(
    backend: Backend, settings: Settings
) -> None:
    limited = dataclasses.replace(settings, max_tool_rounds=1)
    async with running_system(backend, limited, llm=LoopingLLM()) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "q", agent="researcher")
        view = await system.wait_for_run(thread_id, sent["run_id"])
    run = view["runs"][sent["run_id"]]
    assert run["status"] == "failed"
    assert "after 1 rounds (SLIPSTREAM_MAX_TOOL_ROUNDS=1)" in str(run)


class TextThenToolsLLM(LLM):
    """Writes a few words (no sentence end) before asking for a tool, every turn;
    with `handoff_first`, its first turn hands off to the researcher instead."""

    name = "text-then-tools"

    def __init__(self, handoff_first: bool = False) -> None:
        self.calls = 0
        self.handoff_first = handoff_first

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        self.calls += 1
        if self.handoff_first and self.calls == 1:
            yield TextPart("over ")
            yield ToolCallPart("call_over", HANDOFF_TOOL, {"agent": "researcher"})
        else:
            yield TextPart(f"step {self.calls} ")
            yield ToolCallPart(f"call_{self.calls}", "calculator", {"expression": "1+1"})
        yield UsagePart(1, 1, 0, 0, "")
        yield StopPart("tool_use")


async def test_a_run_failed_past_the_round_bound_keeps_the_text_it_streamed(
    backend: Backend, settings: Settings
) -> None:
    """Text the writer still held back (no sentence end, a long flush) goes out
    before `run.failed`, as it does before `run.cancelled`."""
    limited = dataclasses.replace(settings, max_tool_rounds=1, flush_ms=60_000)
    async with running_system(backend, limited, llm=TextThenToolsLLM()) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "q", agent="researcher")
        view = await system.wait_for_run(thread_id, sent["run_id"])
    assert view["runs"][sent["run_id"]]["status"] == "failed"
    assert view["messages"][-1]["content"] == "step 1 step 2 "


async def test_after_a_handoff_the_failed_run_keeps_the_last_agents_text(
    backend: Backend, settings: Settings
) -> None:
    limited = dataclasses.replace(settings, max_tool_rounds=1, flush_ms=60_000)
    llm = TextThenToolsLLM(handoff_first=True)
    async with running_system(backend, limited, llm=llm) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "q", agent="assistant")
        view = await system.wait_for_run(thread_id, sent["run_id"])
    assert view["runs"][sent["run_id"]]["status"] == "failed"
    replies = [(m["agent"], m["content"]) for m in view["messages"][-2:]]
    assert replies == [("assistant", "over "), ("researcher", "step 2 step 3 ")]


class FailsAfterToolsLLM(ScriptedLLM):
    """The scripted model, failing once its tool results are back: an attempt lost there."""

    def __init__(self) -> None:
        super().__init__(words=WORDS, delay_ms=0)

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        if len(prompt.messages) > 1:
            raise ProviderError("overloaded", retryable=True)
        async for part in super().stream(prompt):
            yield part


async def test_a_new_attempt_reuses_journaled_results_and_reruns_unfinished_calls(
    store: EventStore,
) -> None:
    registry = ToolRegistry()
    ran: list[str] = []

    @tool(registry=registry)
    def count(name: str) -> int:
        """Count."""
        ran.append(name)
        return len(ran)

    first = await attempt_for(store)
    question = 'n [[tool count {"name": "a"}]] [[tool count {"name": "b"}]]'
    helper = agent("count")
    with pytest.raises(ProviderError):
        await answer(store, first, question, helper, registry=registry, llm=FailsAfterToolsLLM())
    assert ran == ["a", "b"]

    # Keep the journal as if the worker had died while `b` ran: called, no result.
    journal = Journal.of(await own_events(store, first))
    [unfinished] = [k for k, v in journal.called.items() if v.args == {"name": "b"}]
    del journal.results[unfinished]
    await hold(store, first.thread_id, first.run_id, 2)
    second = dataclasses.replace(first, attempt=2, token=2)
    text = await answer(store, second, question, helper, registry=registry, journal=journal)

    assert ran == ["a", "b", "b"]  # a is reused; b runs again (at least once)
    assert text == "count returned 1. count returned 3. " + answered(question)
    again = [e for e in await own_events(store, second) if getattr(e, "attempt", 0) == 2]
    kinds = [e.type for e in await own_events(store, second)]
    assert kinds.count("tool.called") == 2  # not journaled a second time
    assert kinds.count("tool.result") == 3
    assert [e.type for e in again if e.type == "model.usage"] == ["model.usage"] * 2


async def test_cancel_during_a_slow_tool_cancels_it(store: EventStore) -> None:
    registry = ToolRegistry()
    started, stopped = asyncio.Event(), asyncio.Event()

    @tool(registry=registry)
    async def slow() -> str:
        """Slow."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        return "never"

    attempt = await attempt_for(store)
    cancelled = asyncio.Event()
    task = asyncio.create_task(
        answer(
            store,
            attempt,
            "[[tool slow {}]]",
            agent("slow"),
            registry=registry,
            cancelled=cancelled,
        )
    )
    await asyncio.wait_for(started.wait(), 5)
    cancelled.set()
    with pytest.raises(errors.RunCancelled):
        await task
    assert stopped.is_set()
    assert "tool.result" not in [e.type for e in await own_events(store, attempt)]


async def test_a_researcher_run_calls_the_calculator_over_http(
    backend: Backend, settings: Settings
) -> None:
    question = 'what is [[tool calculator {"expression": "2+3"}]]'
    async with running_system(
        backend, settings, llm=ScriptedLLM(words=WORDS, delay_ms=1)
    ) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, question, agent="researcher")
        view = await system.wait_for_run(thread_id, sent["run_id"])
        response = await system.http.get(f"/api/threads/{thread_id}/events")
    history = [e["event"] for e in response.json() if e["event"].get("run_id") == sent["run_id"]]
    reply = view["messages"][-1]
    assert reply["content"] == "calculator returned 5. " + answered(question)
    kinds = [
        e["type"]
        for e in history
        if e["type"] not in ("message.sent", "run.requested", "message.delta")
    ]
    assert kinds == [
        "run.started",
        "model.usage",
        "tool.called",
        "tool.result",
        "message.completed",
        "model.usage",  # the last call's usage goes out with the completion
        "run.completed",
    ]
    [result] = [e for e in history if e["type"] == "tool.result"]
    assert (result["result"], result["is_error"]) == (5, False)
    deltas = "".join(e["text"] for e in history if e["type"] == "message.delta")
    assert deltas == reply["content"]


class FailsOnceAfterToolsLLM(ScriptedLLM):
    """The scripted model, failing (retryably) the first time its tool results are back."""

    def __init__(self) -> None:
        super().__init__(words=WORDS, delay_ms=1)
        self.failed = False

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        if len(prompt.messages) > 1 and not self.failed:
            self.failed = True
            raise ProviderError("overloaded", retryable=True)
        async for part in super().stream(prompt):
            yield part


async def test_a_retried_run_reuses_the_result_its_first_attempt_journaled(
    backend: Backend, settings: Settings
) -> None:
    question = 'what is [[tool calculator {"expression": "6*7"}]]'
    quick = dataclasses.replace(settings, retry_base_ms=20, retry_max_ms=50)
    async with running_system(backend, quick, llm=FailsOnceAfterToolsLLM()) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, question, agent="researcher")
        view = await system.wait_for_run(thread_id, sent["run_id"])
        response = await system.http.get(f"/api/threads/{thread_id}/events")
    history = [e["event"] for e in response.json() if e["event"].get("run_id") == sent["run_id"]]
    kinds = [e["type"] for e in history]
    assert "run.retrying" in kinds and kinds[-1] == "run.completed"
    assert (kinds.count("tool.called"), kinds.count("tool.result")) == (1, 1)  # ran once
    assert view["messages"][-1]["content"] == "calculator returned 42. " + answered(question)
    # Every model call with usage is counted: the failed one yielded none.
    usage = [(e["attempt"], e["output_tokens"]) for e in history if e["type"] == "model.usage"]
    assert [a for a, _ in usage] == [1, 2, 2]


def test_the_journal_of_a_retried_run_begins_at_its_restart() -> None:
    """A retry runs from scratch: its earlier life's calls, results, hand-offs and
    decisions are not reused; the approval signals are all still counted (the run
    hash counts them all, and the park compares with that count)."""
    run = "t.r"
    yes = {"call_id": "c1", "approved": True}
    earlier: list[ev.Event] = [
        ev.ToolCalled(run_id=run, call_id="c0", tool="calculator", args={"expression": "1"}),
        ev.ToolResult(run_id=run, call_id="c0", result="1"),
        ev.ToolCalled(run_id=run, call_id="c1", tool="stamp", args={"text": "a"}),
        ev.SignalReceived(run_id=run, name="approval", payload=yes),
        ev.ToolCalled(run_id=run, call_id="h", tool="handoff", args={"agent": "writer"}),
        ev.ToolResult(run_id=run, call_id="h", result="handed to writer"),
        ev.AgentHandoff(run_id=run, from_agent="assistant", to_agent="writer"),
        ev.RunCancelled(run_id=run),
    ]
    now = ev.ToolCalled(run_id=run, call_id="c2", tool="calculator", args={"expression": "2"})

    journal = Journal.of([*earlier, ev.RunRestarted(run_id=run), now])

    assert (journal.called, journal.results, journal.handoffs) == ({"c2": now}, {}, ())
    assert (journal.approvals.decisions, journal.approvals.received) == ({}, 1)
    assert len(Journal.of(earlier).handoffs) == 1  # without a restart all of it counts
