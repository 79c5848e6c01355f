"""Agent hand-offs: the `handoff` tool offered to agents with `handoffs`, `agent.handoff`
journaled with the call, the agent handed to answering in a message of its own; an
agent not in the list is an error result; the bound; a new attempt does not redo one.

The shipped agents file is used: writer may hand off to critic, critic to writer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from consumers.agents import agent_named, known_agents
from consumers.handoff import HANDOFF_TOOL, handoff_message_id, handoff_spec
from consumers.llm.base import Prompt
from consumers.llm.directives import read_directives
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from consumers.llm.scripted import ScriptedLLM, scripted_reply
from projections.thread_view import ThreadView
from slipstream import errors
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.store import EventStore
from tests.harness import System, running_system
from tests.test_agent_loop import agent, answer, attempt_for, own_events
from tests.test_client_fold import comparable, js_fold
from tests.waits import until

WORDS = 12


def answered(question: str) -> str:
    return answered_with(question, WORDS)


def answered_with(question: str, words: int) -> str:
    return scripted_reply(read_directives(question).text, words)


async def run_events(system: System, thread_id: str, run_id: str) -> list[dict[str, Any]]:
    response = await system.http.get(f"/api/threads/{thread_id}/events")
    return [e["event"] for e in response.json() if e["event"].get("run_id") == run_id]


async def folded_by_the_page(system: System, thread_id: str) -> dict[str, Any]:
    """The thread's view as the web chat's fold (static/js/fold.js) makes it from its events."""
    frames = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
    empty = ThreadView.empty(thread_id, (await system.view(thread_id))["stream_key"])
    [view] = js_fold([{"start": empty.model_dump(mode="json"), "events": frames}])
    return view


def replies_of(view: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    return [m for m in view["messages"] if m["run_id"] == run_id and m["role"] == "assistant"]


def test_only_agents_with_handoffs_are_offered_the_tool() -> None:
    [spec] = handoff_spec(agent_named("writer"))
    assert spec.name == HANDOFF_TOOL
    properties = spec.input_schema["properties"]
    assert isinstance(properties, dict)
    assert properties["agent"] == {
        "type": "string",
        "enum": ["critic"],
        "description": "the agent to hand the conversation to",
    }
    assert spec.input_schema["required"] == ["agent"]
    assert "reason" in properties
    # researcher has tools and hand-offs; an agent without hand-offs gets no tool.
    assert handoff_spec(agent_named("researcher"))[0].input_schema["properties"]
    no_handoffs = agent_named("writer").model_copy(update={"handoffs": ()})
    assert handoff_spec(no_handoffs) == ()


async def test_writer_hands_off_to_critic_who_answers_in_a_message_of_its_own(
    backend: Backend, settings: Settings
) -> None:
    question = "@writer please draft [[handoff critic]]"
    async with running_system(
        backend, settings, llm=ScriptedLLM(words=WORDS, delay_ms=1)
    ) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, question)
        view = await system.wait_for_run(thread_id, sent["run_id"])
        history = await run_events(system, thread_id, sent["run_id"])
    run_id = sent["run_id"]
    assert view["runs"][run_id]["status"] == "completed"
    kinds = [e["type"] for e in history if e["type"] not in ("message.delta", "agent.routed")]
    assert kinds == [
        "message.sent",
        "run.requested",
        "run.started",
        "message.completed",  # the writer's message: it wrote no text before handing off
        "model.usage",
        "tool.called",
        "tool.result",
        "agent.handoff",
        "message.completed",  # the critic's
        "model.usage",
        "run.completed",
    ]
    [handoff] = [e for e in history if e["type"] == "agent.handoff"]
    assert (handoff["from_agent"], handoff["to_agent"]) == ("writer", "critic")
    [called] = [e for e in history if e["type"] == "tool.called"]
    assert (called["tool"], called["args"]) == (HANDOFF_TOOL, {"agent": "critic"})
    [result] = [e for e in history if e["type"] == "tool.result"]
    assert (result["result"], result["is_error"]) == ("handed off to critic", False)
    usage = [e["agent"] for e in history if e["type"] == "model.usage"]
    assert usage == ["writer", "critic"]

    replies = replies_of(view, run_id)
    assert [(m["agent"], m["status"]) for m in replies] == [
        ("writer", "completed"),
        ("critic", "completed"),
    ]
    assert replies[0]["id"] == view["runs"][run_id]["reply_id"] and replies[0]["content"] == ""
    assert replies[1]["id"] == handoff_message_id(run_id, 1)
    assert replies[1]["content"] == answered(question)
    deltas = [e for e in history if e["type"] == "message.delta"]
    assert {e["message_id"] for e in deltas} == {replies[1]["id"]}
    assert deltas[0]["agent"] == "critic"


async def test_a_handoff_to_an_agent_not_in_the_list_is_an_error_the_model_answers(
    backend: Backend, settings: Settings
) -> None:
    question = "@writer please draft [[handoff researcher]]"
    async with running_system(
        backend, settings, llm=ScriptedLLM(words=WORDS, delay_ms=1)
    ) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, question)
        view = await system.wait_for_run(thread_id, sent["run_id"])
        history = await run_events(system, thread_id, sent["run_id"])
    kinds = [e["type"] for e in history]
    assert "agent.handoff" not in kinds and kinds[-1] == "run.completed"
    [result] = [e for e in history if e["type"] == "tool.result"]
    assert result["is_error"] is True
    assert result["result"] == (
        "handoff: 'researcher' is not one of the agents writer may hand off to (critic)"
    )
    [reply] = [m for m in view["messages"][1:] if m["run_id"] == sent["run_id"]]
    assert (reply["agent"], reply["content"]) == ("writer", answered(question))


class AlwaysHandsOffLLM:
    """A model that hands off to the first agent it may, every time: a hand-off loop."""

    name = "looping"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        self.calls += 1
        [spec] = [t for t in prompt.tools if t.name == HANDOFF_TOOL]
        properties = spec.input_schema["properties"]
        assert isinstance(properties, dict)
        agent = properties["agent"]
        assert isinstance(agent, dict) and isinstance(agent["enum"], list)
        target = agent["enum"][0]
        yield ToolCallPart(f"call_{self.calls}", HANDOFF_TOOL, {"agent": target, "reason": "yours"})
        yield UsagePart(1, 1, 0, 0, "looping")
        yield StopPart("tool_use")


async def test_past_the_handoff_bound_the_run_fails(backend: Backend, settings: Settings) -> None:
    limited = dataclasses.replace(settings, max_handoffs=2)
    llm = AlwaysHandsOffLLM()
    async with running_system(backend, limited, llm=llm) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "@writer please draft")
        view = await system.wait_for_run(thread_id, sent["run_id"])
        history = await run_events(system, thread_id, sent["run_id"])
    run = view["runs"][sent["run_id"]]
    assert run["status"] == "failed"
    assert run["reason"] == (
        "writer asked to hand off to critic after 2 hand-offs (SLIPSTREAM_MAX_HANDOFFS=2)"
    )
    assert llm.calls == 3
    handoffs = [
        (e["from_agent"], e["to_agent"], e["reason"])
        for e in history
        if e["type"] == "agent.handoff"
    ]
    assert handoffs == [("writer", "critic", "yours"), ("critic", "writer", "yours")]
    # Every agent's message is completed, the last one too (it only asked for more).
    replies = replies_of(view, sent["run_id"])
    assert [(m["agent"], m["status"]) for m in replies] == [
        ("writer", "completed"),
        ("critic", "completed"),
        ("writer", "completed"),
    ]


class FailsOnceForLLM(ScriptedLLM):
    """The scripted model, failing (retryably) the first time `agent` is asked; it
    records which agent (by system prompt) each call was for, and the tools offered."""

    def __init__(self, agent: str) -> None:
        super().__init__(words=WORDS, delay_ms=1)
        self.agent = agent
        self.failed = False
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        [agent] = [a for a in known_agents() if agent_named(a).system == prompt.system]
        self.asked.append((agent, tuple(t.name for t in prompt.tools)))
        if agent == self.agent and not self.failed:
            self.failed = True
            raise errors.ProviderError("overloaded", retryable=True)
        async for part in super().stream(prompt):
            yield part


async def test_a_new_attempt_goes_on_with_the_agent_handed_to(
    backend: Backend, settings: Settings
) -> None:
    question = "@writer please draft [[handoff critic]]"
    quick = dataclasses.replace(settings, retry_base_ms=20, retry_max_ms=50)
    llm = FailsOnceForLLM("critic")
    async with running_system(backend, quick, llm=llm) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, question)
        view = await system.wait_for_run(thread_id, sent["run_id"])
        history = await run_events(system, thread_id, sent["run_id"])
    kinds = [e["type"] for e in history]
    assert "run.retrying" in kinds and kinds[-1] == "run.completed"
    # The writer was asked once: the second attempt started with the critic.
    offered = (HANDOFF_TOOL,)  # neither has tools; each may hand off
    assert llm.asked == [("writer", offered), ("critic", offered), ("critic", offered)]
    assert (kinds.count("agent.handoff"), kinds.count("tool.called")) == (1, 1)
    replies = replies_of(view, sent["run_id"])
    assert [(m["agent"], m["status"]) for m in replies] == [
        ("writer", "completed"),
        ("critic", "completed"),
    ]
    assert replies[1]["content"] == answered(question)
    [critic_done] = [
        e for e in history if e["type"] == "message.completed" and e["agent"] == "critic"
    ]
    assert critic_done["message_id"] == handoff_message_id(sent["run_id"], 1)


async def test_tool_turns_before_a_handoff_are_in_the_history_of_a_new_attempt(
    backend: Backend, settings: Settings
) -> None:
    question = '@researcher what is [[tool calculator {"expression": "2+3"}]] [[handoff writer]]'
    quick = dataclasses.replace(settings, retry_base_ms=20, retry_max_ms=50)
    llm = FailsOnceForLLM("writer")
    async with running_system(backend, quick, llm=llm) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, question)
        view = await system.wait_for_run(thread_id, sent["run_id"])
        history = await run_events(system, thread_id, sent["run_id"])
    kinds = [e["type"] for e in history]
    assert "run.retrying" in kinds and kinds[-1] == "run.completed"
    assert [e["tool"] for e in history if e["type"] == "tool.called"] == ["calculator", "handoff"]
    researcher = ("researcher", ("calculator", "now", "search_thread", "fetch_url", HANDOFF_TOOL))
    writer = ("writer", (HANDOFF_TOOL,))
    assert llm.asked == [researcher, researcher, writer, writer]
    replies = replies_of(view, sent["run_id"])
    assert [(m["agent"], m["status"]) for m in replies] == [
        ("researcher", "completed"),
        ("writer", "completed"),
    ]
    # The writer saw the calculator's call and result, rebuilt from the journal.
    assert replies[1]["content"] == "calculator returned 5. " + answered(question)


async def test_an_agent_without_handoffs_gets_an_error_for_a_handoff_call(
    store: EventStore,
) -> None:
    attempt = await attempt_for(store)
    question = "n [[handoff critic]]"
    text = await answer(store, attempt, question, agent("calculator"))
    assert text == answered(question)
    events = await own_events(store, attempt)
    assert "agent.handoff" not in [e.type for e in events]
    [result] = [e for e in events if isinstance(e, ev.ToolResult)]
    assert (result.result, result.is_error) == (
        "handoff: helper cannot hand off to another agent",
        True,
    )


def test_the_handoff_bound_is_a_setting() -> None:
    assert Settings.from_env({}).max_handoffs == 3
    assert Settings.from_env({"SLIPSTREAM_MAX_HANDOFFS": "0"}).max_handoffs == 0
    with pytest.raises(errors.ConfigError, match="SLIPSTREAM_MAX_HANDOFFS=-1 must be at least 0"):
        Settings.from_env({"SLIPSTREAM_MAX_HANDOFFS": "-1"})


async def test_a_cancel_while_the_agent_handed_to_streams_keeps_its_text(
    backend: Backend, settings: Settings
) -> None:
    question = "@writer please draft [[handoff critic]]"
    slow = ScriptedLLM(words=200, delay_ms=5)
    async with running_system(backend, settings, llm=slow) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, question)
        run_id = sent["run_id"]

        async def critic_streams() -> bool:
            history = await run_events(system, thread_id, run_id)
            return any(e["type"] == "message.delta" for e in history)

        await until(critic_streams)
        assert (await system.http.post(f"/api/runs/{run_id}/cancel")).status_code == 202
        view = await system.wait_for_run(thread_id, run_id)
        history = await run_events(system, thread_id, run_id)
    assert view["runs"][run_id]["status"] == "cancelled"
    critic = handoff_message_id(run_id, 1)
    deltas = [e for e in history if e["type"] == "message.delta"]
    assert {e["message_id"] for e in deltas} == {critic}  # the held-back tail too
    text = "".join(e["text"] for e in deltas)
    assert text and answered_with(question, 200).startswith(text)
    [content] = [m["content"] for m in view["messages"] if m["id"] == critic]
    assert content == text


async def test_a_cancel_during_the_answer_handed_to_ends_both_messages(
    backend: Backend, settings: Settings
) -> None:
    question = "@writer please draft [[handoff critic]]"
    slow = ScriptedLLM(words=200, delay_ms=5)
    async with running_system(backend, settings, llm=slow) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, question)
        run_id = sent["run_id"]

        async def critic_streams() -> bool:
            view = await system.view(thread_id)
            return [m["status"] for m in replies_of(view, run_id)] == ["completed", "streaming"]

        await until(critic_streams)
        assert (await system.http.post(f"/api/runs/{run_id}/cancel")).status_code == 202
        view = await system.wait_for_run(thread_id, run_id)
        folded = await folded_by_the_page(system, thread_id)
    assert view["runs"][run_id]["status"] == "cancelled"
    assert [(m["agent"], m["status"]) for m in replies_of(view, run_id)] == [
        ("writer", "completed"),
        ("critic", "cancelled"),
    ]
    assert comparable(folded) == comparable(view)


class CriticBreaksLLM(ScriptedLLM):
    """The scripted model, except that the critic's answer breaks off with an error
    no retry mends, after its first sentence (which a sentence end flushes at once)."""

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        if prompt.system != agent_named("critic").system:
            async for part in super().stream(prompt):
                yield part
            return
        yield TextPart("The draft is good. ")
        raise errors.ProviderError("invalid request", retryable=False)


async def test_a_failure_of_the_agent_handed_to_fails_its_message(
    backend: Backend, settings: Settings
) -> None:
    question = "@writer please draft [[handoff critic]]"
    async with running_system(
        backend, settings, llm=CriticBreaksLLM(words=WORDS, delay_ms=1)
    ) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, question)
        view = await system.wait_for_run(thread_id, sent["run_id"])
        folded = await folded_by_the_page(system, thread_id)
    assert comparable(folded) == comparable(view)
    run = view["runs"][sent["run_id"]]
    assert (run["status"], run["reason"]) == ("failed", "model error: invalid request")
    assert [(m["agent"], m["status"]) for m in replies_of(view, sent["run_id"])] == [
        ("writer", "completed"),
        ("critic", "failed"),
    ]
    assert replies_of(view, sent["run_id"])[1]["content"] == "The draft is good. "
