"""Conversation context: other agents' answers labelled, tool turns repaired before they
are sent, and a long thread cut to the agent's token budget with `context.trimmed`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consumers.agent_loop import AgentLoop
from consumers.agents import AgentsFileError, agent_named, load
from consumers.answer import AnswerWriter
from consumers.context import (
    NO_RESULT,
    estimate_tokens,
    fixed_tokens,
    message_tokens,
    repaired,
    trimmed,
)
from consumers.handoff import handoff_spec
from consumers.llm.base import ChatMessage, Prompt, TextBlock, ToolResultBlock, ToolUseBlock
from consumers.llm.parts import Part
from consumers.llm.scripted import ScriptedLLM
from consumers.prompt import SHARED_THREAD_NOTE, context_for, prompt_for, tool_specs
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.store import EventStore
from tests.harness import running_system
from tests.test_agent_loop import agent, attempt_for
from tests.test_prompt import view_of

USE = ToolUseBlock("c1", "calculator", {"expression": "2+2"})
RESULT = ToolResultBlock("c1", 4)
MISSING = ToolResultBlock("c1", NO_RESULT, is_error=True)


def user(*content: str | TextBlock | ToolUseBlock | ToolResultBlock) -> ChatMessage:
    return _message("user", content)


def assistant(*content: str | TextBlock | ToolUseBlock | ToolResultBlock) -> ChatMessage:
    return _message("assistant", content)


def _message(role: str, content: tuple[Any, ...]) -> ChatMessage:
    if len(content) == 1 and isinstance(content[0], str):
        return ChatMessage(role, content[0])  # type: ignore[arg-type]
    blocks = tuple(TextBlock(c) if isinstance(c, str) else c for c in content)
    return ChatMessage(role, blocks)  # type: ignore[arg-type]


# --- repair ---------------------------------------------------------------------------


def test_a_whole_history_comes_back_as_it_was() -> None:
    history = (user("add"), assistant("Let me see.", USE), user(RESULT), assistant("It is 4."))
    assert repaired(history) == history


def test_a_call_without_its_result_gets_an_error_result() -> None:
    history = (user("add"), assistant(USE), user("and then?"))
    assert repaired(history) == (user("add"), assistant(USE), user(MISSING, "and then?"))


def test_a_call_that_ends_the_history_gets_its_error_result_in_a_message_of_its_own() -> None:
    assert repaired((user("add"), assistant("Sure.", USE))) == (
        user("add"),
        assistant("Sure.", USE),
        user(MISSING),
    )


def test_one_of_two_calls_answered_keeps_that_result_and_fills_the_other_in_order() -> None:
    second = ToolUseBlock("c2", "now", {})
    history = (user("go"), assistant(USE, second), user(ToolResultBlock("c2", "noon")))
    assert repaired(history)[2] == user(MISSING, ToolResultBlock("c2", "noon"))


def test_a_result_without_its_call_is_dropped_and_the_roles_merge_again() -> None:
    history = (user("one"), user(RESULT), assistant("ok"), user(RESULT, "two"))
    assert repaired(history) == (user("one"), assistant("ok"), user("two"))


def test_a_message_of_only_an_orphan_result_goes_and_its_neighbours_meet() -> None:
    history = (user("one"), assistant("a"), user(RESULT), assistant("b"), user("two"))
    assert repaired(history) == (user("one"), assistant("a\n\nb"), user("two"))


def test_it_starts_with_the_user_and_drops_empty_text_and_repeated_call_ids() -> None:
    history = (
        assistant("stray"),
        user("go", ""),
        assistant(USE),
        user(RESULT),
        assistant(USE),  # the same id again: the API wants them unique
        user(RESULT),
    )
    assert repaired(history) == (user("go"), assistant(USE), user(RESULT))


def test_calls_go_after_text_and_results_before_it() -> None:
    history = (user("go"), assistant(USE, "then text"), user("more", RESULT))
    assert repaired(history) == (
        user("go"),
        assistant("then text", USE),
        user(RESULT, "more"),
    )


def test_a_tool_result_in_an_assistant_message_or_a_call_in_a_user_one_is_dropped() -> None:
    history = (user("go", USE), assistant("hi", RESULT))
    assert repaired(history) == (user("go"), assistant("hi"))


# --- budget ---------------------------------------------------------------------------


def test_the_estimate_is_about_four_characters_a_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    assert message_tokens(user("x" * 40)) == 10 + 4  # with the turn markers


def thread(n: int) -> list[ChatMessage]:
    """n questions and n-1 answers: q1 a1 q2 a2 ... qn, each of 40 characters."""
    out: list[ChatMessage] = []
    for i in range(1, n + 1):
        out.append(user(f"q{i}".ljust(40, ".")))
        if i < n:
            out.append(assistant(f"a{i}".ljust(40, ".")))
    return out


def test_what_fits_is_kept_whole() -> None:
    cut = trimmed(thread(3), budget=1000, fixed=10)
    assert (cut.dropped, cut.kept, cut.estimated_tokens) == (0, 5, 10 + 5 * 14)


def test_the_oldest_go_first_and_what_is_kept_starts_with_the_user() -> None:
    # 14 tokens a message, 20 fixed: 7 messages are 118; 80 leaves room for 4 (76)...
    cut = trimmed(thread(4), budget=80, fixed=20)
    # ...but those would start with an answer, so its question's answer goes too: 3 kept.
    assert [m.text[:2] for m in cut.messages] == ["q3", "a3", "q4"]
    assert (cut.dropped, cut.kept, cut.estimated_tokens, cut.budget) == (4, 3, 20 + 42, 80)


def test_the_newest_question_is_kept_even_past_the_budget() -> None:
    cut = trimmed(thread(3), budget=1)
    assert [m.text[:2] for m in cut.messages] == ["q3"]
    assert cut.dropped == 4 and cut.estimated_tokens == 14


def test_a_tool_call_is_never_split_from_its_result() -> None:
    history = [
        user("q1".ljust(40, ".")),
        assistant("x" * 40, USE),
        user(RESULT),
        assistant("a1".ljust(40, ".")),
        user("q2".ljust(40, ".")),
    ]
    # Room for about three messages: dropping q1 alone would leave the call first.
    cut = trimmed(history, budget=50)
    assert [m.role for m in cut.messages] == ["user"]
    for kept in (trimmed(history, budget=b).messages for b in range(1, 120)):
        uses = [b for m in kept for b in m.blocks if isinstance(b, ToolUseBlock)]
        results = [b for m in kept for b in m.blocks if isinstance(b, ToolResultBlock)]
        assert len(uses) == len(results)


# --- the prompt -----------------------------------------------------------------------


def answered(n: int, run: str, agent: str, text: str) -> list[ev.Event]:
    return [
        ev.MessageSent(message_id=f"u{n}", content=f"question {n}", run_id=run),
        ev.RunRequested(run_id=run, message_id=f"u{n}", reply_id=f"a{n}", agent=agent),
        ev.MessageCompleted(run_id=run, message_id=f"a{n}", text=text, agent=agent),
        ev.RunCompleted(run_id=run),
    ]


def test_another_agents_answer_is_labelled_and_the_system_prompt_says_so() -> None:
    view = view_of(
        *answered(1, "t.aaaaa1", "writer", "a draft"),
        *answered(2, "t.aaaaa2", "critic", "a review"),
        ev.MessageSent(message_id="u3", content="question 3", run_id="t.aaaaa3"),
        ev.RunRequested(run_id="t.aaaaa3", message_id="u3", reply_id="a3", agent="writer"),
    )
    prompt = prompt_for(view, "t.aaaaa3")
    assert [m.text for m in prompt.messages] == [
        "question 1",
        "a draft",  # the writer's own: not labelled
        "question 2",
        "[critic] a review",
        "question 3",
    ]
    assert prompt.system == agent_named("writer").system + "\n\n" + SHARED_THREAD_NOTE


def test_a_thread_of_one_agent_is_sent_as_it_always_was() -> None:
    view = view_of(
        *answered(1, "t.aaaaa1", "assistant", "an answer"),
        ev.MessageSent(message_id="u2", content="question 2", run_id="t.aaaaa2"),
        ev.RunRequested(run_id="t.aaaaa2", message_id="u2", reply_id="a2", agent="assistant"),
    )
    context = context_for(view, "t.aaaaa2", budget=100_000)
    assert context.cut is None
    assert context.prompt.system == agent_named("assistant").system


def test_a_budget_cuts_the_oldest_messages_of_the_prompt() -> None:
    events = [e for n in range(1, 6) for e in answered(n, f"t.aaaaa{n}", "assistant", "x" * 400)]
    view = view_of(
        *events,
        ev.MessageSent(message_id="u9", content="the last one", run_id="t.aaaaa9"),
        ev.RunRequested(run_id="t.aaaaa9", message_id="u9", reply_id="a9", agent="assistant"),
    )
    whole = context_for(view, "t.aaaaa9", budget=100_000)
    cut = context_for(view, "t.aaaaa9", budget=400)
    assert whole.cut is None and len(whole.prompt.messages) == 11
    assert cut.cut is not None and cut.cut.dropped + cut.cut.kept == 11
    assert cut.prompt.messages[-1] == ChatMessage("user", "the last one")
    assert cut.prompt.messages == whole.prompt.messages[cut.cut.dropped :]
    assert cut.cut.estimated_tokens <= 400


# --- the agent loop sends only repaired histories --------------------------------------


class Recording(ScriptedLLM):
    def __init__(self) -> None:
        super().__init__(words=5, delay_ms=0)
        self.sent: list[Prompt] = []

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        self.sent.append(prompt)
        async for part in super().stream(prompt):
            yield part


async def test_the_agent_loop_repairs_a_broken_history_before_it_calls_the_model(
    store: EventStore,
) -> None:
    attempt = await attempt_for(store)
    llm = Recording()
    loop = AgentLoop(
        store, llm, AnswerWriter(store, attempt, 50), agent("calculator"), max_rounds=2
    )
    broken = (user("add"), assistant(USE), user(ToolResultBlock("c9", "stray"), "go on"))
    question = Prompt(system="s", messages=broken, question="go on")
    await loop.answer(question, asyncio.Event())
    [sent] = llm.sent
    assert sent.messages == (user("add"), assistant(USE), user(MISSING, "go on"))


# --- a whole run ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_a_long_thread_is_cut_and_the_model_sees_only_the_kept_part(
    backend: Backend, settings: Settings
) -> None:
    # Room for the system prompt, the tools and a question, and some 100 tokens more:
    # one exchange before it (an answer of 30 words is some 50 tokens), not two.
    assistant = agent_named("assistant")
    fixed = fixed_tokens(assistant.system, (*tool_specs(assistant), *handoff_spec(assistant)))
    budget = fixed + message_tokens(user("question number 4")) + 100
    small = dataclasses.replace(settings, context_tokens=budget)
    llm = ScriptedLLM(words=30, delay_ms=0)
    async with running_system(backend, small, llm=llm) as system:
        thread_id = await system.new_thread()
        for n in range(1, 5):
            sent = await system.send(thread_id, f"question number {n}", agent="assistant")
            view = await system.wait_for_run(thread_id, sent["run_id"])
        events = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
    last = sent["run_id"]
    mine = [e["event"] for e in events if e["event"].get("run_id") == last]
    kinds = [e["type"] for e in mine]
    assert kinds.index("context.trimmed") < kinds.index("model.usage")
    [cut] = [e for e in mine if e["type"] == "context.trimmed"]
    [usage] = [e for e in mine if e["type"] == "model.usage"]
    assert cut["agent"] == "assistant" and cut["budget"] == budget and cut["attempt"] == 1
    assert cut["estimated_tokens"] <= budget
    history = [m for m in view["messages"] if m["run_id"] != last or m["role"] == "user"]
    assert cut["dropped_messages"] + cut["kept_messages"] == len(history) == 7
    kept = history[cut["dropped_messages"] :]
    assert kept[0]["role"] == "user" and kept[-1]["content"] == "question number 4"
    # The scripted model's input tokens are the words it was sent: the kept part only.
    system_words = len(assistant.system.split())
    words = [len(m["content"].split()) for m in history]
    assert usage["input_tokens"] == system_words + sum(words[cut["dropped_messages"] :])
    assert usage["input_tokens"] < system_words + sum(words)
    # The first two runs fitted: nothing was recorded for them.
    cut_runs = [e["event"]["run_id"] for e in events if e["event"]["type"] == "context.trimmed"]
    assert len(cut_runs) == 2 and cut_runs[-1] == last
    assert kept == history[-3:]


# --- settings -------------------------------------------------------------------------


def test_the_budget_is_the_agents_else_the_environments(tmp_path: Path) -> None:
    assert Settings.from_env({}).context_tokens == 100_000
    assert Settings.from_env({"SLIPSTREAM_CONTEXT_TOKENS": "5000"}).context_tokens == 5000
    entry = '[[agents]]\nname = "a"\ndescription = "A."\nsystem = "You are a."\n'
    path = tmp_path / "agents.toml"
    path.write_text('[router]\ndefault = "a"\n' + entry + "context_tokens = 2000\n")
    assert load(path, workflow_names=()).by_name["a"].context_tokens == 2000
    path.write_text('[router]\ndefault = "a"\n' + entry + "context_tokens = 0\n")
    with pytest.raises(AgentsFileError) as refused:
        load(path, workflow_names=())
    assert str(refused.value).startswith(
        f"{path}: agent 'a': context_tokens: Input should be greater than or equal to 1"
    )
