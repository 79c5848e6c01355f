"""The router: each way a message finds its agent, and what it says about why."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from consumers.agents import Agent, AgentsFile, load
from consumers.router import CLASSIFIER_SYSTEM, classifier_question, mentions, route

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
