"""The router: each way a message finds its agent, and what it says about why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from consumers import agents, router
from consumers.agents import SHIPPED_FILE, Agent, AgentsFile, load
from consumers.llm.base import LLM, ChatMessage, Classification, Prompt
from consumers.llm.parts import Part, StopPart, TextPart, UsagePart
from consumers.llm.scripted import ScriptedLLM
from consumers.router import (
    CLASSIFIER_SYSTEM,
    classifier_question,
    mentions,
    model_classifier,
    route,
)
from service import api
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ProviderError
from tests.harness import running_system

SHIPPED = load()


def with_classifier(on: bool) -> AgentsFile:
    return SHIPPED.model_copy(
        update={"router": SHIPPED.router.model_copy(update={"classifier": on})}
    )


class Classifier:
    """Answers with a fixed text and records what it was asked."""

    def __init__(self, answer: str | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[str, list[str]]] = []

    async def __call__(self, content: str, agents: Sequence[Agent]) -> str:
        self.asked.append((content, [a.name for a in agents]))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_a_pick_wins_over_mentions_and_rules() -> None:
    decision = await route("@critic please research this", "writer", SHIPPED)
    assert (decision.agents, decision.by) == (("writer",), "pick")


async def test_several_picks_are_kept_in_order() -> None:
    decision = await route("hello", ["writer", "critic"], SHIPPED)
    assert (decision.agents, decision.by) == (("writer", "critic"), "pick")


async def test_mentions_win_over_rules_and_two_mentions_are_two_agents() -> None:
    decision = await route(
        "@writer draft it, then @critic and @writer again; research", None, SHIPPED
    )
    assert decision.agents == ("writer", "critic")
    assert decision.by == "mention" and decision.reason == "mentioned @writer, @critic"


async def test_a_mention_may_name_a_workflow() -> None:
    decision = await route("@research durable runs", None, SHIPPED, workflows={"research"})
    assert (decision.agents, decision.by) == (("research",), "mention")


@pytest.mark.parametrize(
    "content",
    ["mail me at someone@writer.com", "ask @nobody", "email bob@critic"],
)
def test_what_is_not_a_mention(content: str) -> None:
    assert mentions(content, {"writer", "critic"}) == []


async def test_the_first_matching_rule_decides_and_the_reason_names_it() -> None:
    decision = await route("How many moons does Mars have? Then draft a tweet.", None, SHIPPED)
    assert (decision.agents, decision.by) == (("researcher",), "rule")
    assert decision.reason.startswith("researcher's rule (?i)\\b(research|look up")
    assert decision.reason.endswith("matched 'How many'")


async def test_later_agents_rules_apply_when_earlier_ones_do_not_match() -> None:
    decision = await route("Please proofread my cover letter", None, SHIPPED)
    assert (decision.agents, decision.by) == (("critic",), "rule")


async def test_with_the_classifier_off_it_is_not_asked() -> None:
    classify = Classifier("critic")
    decision = await route("Hello there", None, SHIPPED, classify)
    assert (decision.agents, decision.by) == (("assistant",), "default")
    assert decision.reason == "no pick, mention or rule matched"
    assert classify.asked == []


async def test_the_classifier_picks_when_no_rule_matches() -> None:
    classify = Classifier(" writer.\n")
    decision = await route("A note for my team about Friday", None, with_classifier(True), classify)
    assert (decision.agents, decision.by) == (("writer",), "classifier")
    assert decision.reason == "the classifier chose writer"
    assert classify.asked == [
        ("A note for my team about Friday", ["assistant", "researcher", "writer", "critic"])
    ]


async def test_a_rule_is_preferred_to_the_classifier() -> None:
    classify = Classifier("writer")
    decision = await route("calculate 2+2", None, with_classifier(True), classify)
    assert decision.by == "rule" and classify.asked == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            "the writer, I think",
            "the classifier answered 'the writer, I think', not an agent's name",
        ),
        ("", "the classifier answered '', not an agent's name"),
        (RuntimeError("overloaded"), "the classifier failed (overloaded); the default"),
    ],
)
async def test_a_classifier_answer_that_is_no_agent_falls_back_to_the_default(
    answer: str | Exception, reason: str
) -> None:
    decision = await route("hi", None, with_classifier(True), Classifier(answer))
    assert (decision.agents, decision.by, decision.reason) == (("assistant",), "default", reason)


async def test_the_classifier_on_but_not_given_is_the_default() -> None:
    decision = await route("hi", None, with_classifier(True))
    assert (decision.agents, decision.by) == (("assistant",), "default")
    assert "no classifier" in decision.reason


async def test_the_default_is_the_files(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        '[router]\ndefault = "b"\n'
        '[[agents]]\nname = "a"\ndescription = "A."\nsystem = "You are a."\n'
        '[[agents]]\nname = "b"\ndescription = "B."\nsystem = "You are b."\n'
    )
    decision = await route("anything at all", None, load(path, workflow_names=()))
    assert (decision.agents, decision.by) == (("b",), "default")


def test_the_classifier_question_lists_each_agent_with_its_description() -> None:
    question = classifier_question("hi", SHIPPED.agents)
    assert "- researcher: Finds facts and works things out, with tools." in question
    assert question.endswith("Message:\nhi\n\nWhich agent should answer?")
    assert "exactly one agent name" in CLASSIFIER_SYSTEM


# --- the model-backed classifier --------------------------------------------------------


class Replying:
    """A model that answers every prompt with `parts` (after `stall_s`), recording prompts."""

    name = "stub"

    def __init__(self, *parts: Part | Exception, stall_s: float = 0) -> None:
        self.parts = parts
        self.stall_s = stall_s
        self.prompts: list[Prompt] = []

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        self.prompts.append(prompt)
        if self.stall_s:
            await asyncio.Event().wait()  # never answers: the caller's bound ends it
        for part in self.parts:
            if isinstance(part, Exception):
                raise part
            yield part


USAGE = UsagePart(
    input_tokens=90, output_tokens=2, cache_read_tokens=0, cache_write_tokens=0, model="m-1"
)


def asking(llm: LLM, timeout_s: float = 5) -> router.Classifier:
    return model_classifier(llm, "assistant", timeout_s=timeout_s)


async def test_the_scripted_model_picks_the_agent_the_message_names() -> None:
    llm = ScriptedLLM(delay_ms=0)
    decision = await route(
        "A note for the critic about Friday", None, with_classifier(True), asking(llm)
    )
    assert (decision.agents, decision.by) == (("critic",), "classifier")
    assert decision.reason == "the classifier chose critic"
    question = classifier_question("A note for the critic about Friday", SHIPPED.agents)
    # Its usage: the words of the system prompt and of the question it was asked.
    assert decision.usage is not None and decision.usage.model == "scripted"
    assert decision.usage.input_tokens == len(CLASSIFIER_SYSTEM.split()) + len(question.split())
    assert decision.usage.output_tokens == 1


async def test_the_scripted_model_names_the_default_when_the_message_names_no_agent() -> None:
    decision = await route(
        "A note about Friday", None, with_classifier(True), asking(ScriptedLLM(delay_ms=0))
    )
    assert (decision.agents, decision.by) == (("assistant",), "classifier")


async def test_the_model_is_asked_the_question_with_the_agents_and_the_message() -> None:
    llm = Replying(TextPart("wri"), TextPart("ter"), USAGE, StopPart("end_turn"))
    decision = await route("A note for my team", None, with_classifier(True), asking(llm))
    assert (decision.agents, decision.by, decision.usage) == (("writer",), "classifier", USAGE)
    [prompt] = llm.prompts
    assert prompt.system == CLASSIFIER_SYSTEM and prompt.tools == ()
    assert prompt.messages == (
        ChatMessage("user", classifier_question("A note for my team", SHIPPED.agents)),
    )
    assert prompt.classify == Classification(
        ("assistant", "researcher", "writer", "critic"), "assistant"
    )


async def test_a_model_answer_that_is_no_agent_falls_back_and_keeps_its_usage() -> None:
    llm = Replying(TextPart("Probably the writer."), USAGE, StopPart("end_turn"))
    decision = await route("A note for my team", None, with_classifier(True), asking(llm))
    assert (decision.agents, decision.by) == (("assistant",), "default")
    assert decision.reason == "the classifier answered 'Probably the writer.', not an agent's name"
    assert decision.usage == USAGE


async def test_a_model_error_falls_back_to_the_default_and_says_why() -> None:
    failing = ProviderError("anthropic: HTTP 529 overloaded_error: busy", retryable=True)
    llm = Replying(USAGE, failing)
    decision = await route("hi", None, with_classifier(True), asking(llm))
    assert (decision.agents, decision.by) == (("assistant",), "default")
    assert decision.reason == (
        "the classifier failed (anthropic: HTTP 529 overloaded_error: busy); the default"
    )
    assert decision.usage == USAGE  # spent before it broke


async def test_a_model_that_does_not_answer_in_time_falls_back_to_the_default() -> None:
    llm = Replying(TextPart("writer"), stall_s=60)
    decision = await route("hi", None, with_classifier(True), asking(llm, timeout_s=0.05))
    assert (decision.agents, decision.by, decision.usage) == (("assistant",), "default", None)
    assert decision.reason == "the classifier failed (no answer within 0.05 s); the default"


async def test_a_long_answer_is_cut_before_it_is_shown() -> None:
    llm = Replying(*(TextPart("word " * 20) for _ in range(50)), StopPart("end_turn"))
    decision = await route("hi", None, with_classifier(True), asking(llm))
    assert decision.by == "default" and len(decision.reason) < 120


# --- over HTTP, with `classifier = true` in the agents file --------------------------------


@pytest.fixture
def classifying_file(tmp_path: Path) -> Iterator[AgentsFile]:
    text = SHIPPED_FILE.read_text().replace("classifier = false", "classifier = true")
    assert "classifier = true" in text
    path = tmp_path / "agents.toml"
    path.write_text(text)
    loaded = load(path)
    previous = agents.use(loaded)
    try:
        yield loaded
    finally:
        agents.use(previous)


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_an_unmatched_message_is_routed_by_the_classifier_in_the_same_append(
    backend: Backend, settings: Settings, classifying_file: AgentsFile
) -> None:
    content = "A short note for the critic about Friday"
    async with running_system(backend, settings) as system:
        thread_id = await system.new_thread()
        accepted = await system.send(thread_id, content)
        view = await system.wait_for_run(thread_id, accepted["run_id"])
        stored = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
        usage = (await system.http.get(f"/api/usage?thread_id={thread_id}&agent=router")).json()
    sent = next(i for i, s in enumerate(stored) if s["event"]["type"] == "message.sent")
    message, routed, requested, charged = (s["event"] for s in stored[sent : sent + 4])
    assert message["agent"] == "critic"
    assert (routed["type"], routed["agents"], routed["by"]) == (
        "agent.routed",
        ["critic"],
        "classifier",
    )
    assert routed["reason"] == "the classifier chose critic"
    assert requested["type"] == "run.requested" and requested["agent"] == "critic"
    # The classification call is charged to the run it started, as the router's.
    question = classifier_question(content, classifying_file.agents)
    assert charged == {
        "type": "model.usage",
        "event_id": charged["event_id"],
        "run_id": accepted["run_id"],
        "agent": "router",
        "model": "scripted",
        "input_tokens": len(CLASSIFIER_SYSTEM.split()) + len(question.split()),
        "output_tokens": 1,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "attempt": 1,
    }
    assert view["runs"][accepted["run_id"]]["status"] == "completed"
    assert view["messages"][-1]["agent"] == "critic"
    assert view["usage"]["by_agent"]["router"]["calls"] == 1
    assert usage["total"]["calls"] == 1


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_a_resend_is_answered_from_the_first_send_without_asking_the_classifier_again(
    backend: Backend,
    settings: Settings,
    classifying_file: AgentsFile,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    def counting(llm: LLM, default: str, *, timeout_s: float) -> router.Classifier:
        classify = model_classifier(llm, default, timeout_s=timeout_s)

        async def counted(content: str, agents: Sequence[Agent]) -> str | router.Answer:
            asked.append(content)
            return await classify(content, agents)

        return counted

    monkeypatch.setattr(api, "model_classifier", counting)
    content = "A short note for the critic about Friday"
    async with running_system(backend, settings) as system:
        thread_id = await system.new_thread()
        first = await system.send(thread_id, content, client_id="c-1")
        again = await system.send(thread_id, content, client_id="c-1")
        await system.wait_for_run(thread_id, first["run_id"])
        stored = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
    assert asked == [content]
    assert again == {**first, "duplicate": True}
    assert [s["event"]["type"] for s in stored].count("message.sent") == 1
