"""The prompt a run sends: the conversation up to the message it answers."""

from __future__ import annotations

from unittest.mock import patch

from consumers.agents import agent_named
from consumers.llm.base import ChatMessage
from consumers.prompt import prompt_for
from projections.thread_view import ThreadView, fold
from slipstream import events as ev
from slipstream.store import Stored


def asked(n: int, run: str) -> list[ev.Event]:
    return [
        ev.MessageSent(message_id=f"u{n}", content=f"question {n}", run_id=run),
        ev.RunRequested(run_id=run, message_id=f"u{n}", reply_id=f"a{n}", agent="assistant"),
    ]


def view_of(*events: ev.Event) -> ThreadView:
    stored = [Stored(f"1-{i}", e) for i, e in enumerate(events)]
    return fold(ThreadView.empty("t", "k"), stored)


def test_earlier_answers_are_part_of_the_conversation() -> None:
    view = view_of(
        *asked(1, "t.aaaaa1"),
        ev.MessageCompleted(run_id="t.aaaaa1", message_id="a1", text="answer 1"),
        ev.RunCompleted(run_id="t.aaaaa1"),
        *asked(2, "t.aaaaa2"),
    )
    prompt = prompt_for(view, "t.aaaaa2")
    assert prompt.messages == (
        ChatMessage("user", "question 1"),
        ChatMessage("assistant", "answer 1"),
        ChatMessage("user", "question 2"),
    )
    assert prompt.question == "question 2"


def test_a_failed_answer_merges_the_questions_around_it_but_not_the_question() -> None:
    view = view_of(
        *asked(1, "t.aaaaa1"),
        ev.RunFailed(run_id="t.aaaaa1", reason="boom"),
        *asked(2, "t.aaaaa2"),
    )
    prompt = prompt_for(view, "t.aaaaa2")
    assert prompt.messages == (ChatMessage("user", "question 1\n\nquestion 2"),)
    assert prompt.question == "question 2"


def test_later_messages_are_left_out() -> None:
    view = view_of(*asked(1, "t.aaaaa1"), *asked(2, "t.aaaaa2"))
    prompt = prompt_for(view, "t.aaaaa1")
    assert prompt.messages == (ChatMessage("user", "question 1"),)


def test_a_regenerated_answer_does_not_see_the_answer_it_replaces() -> None:
    view = view_of(
        *asked(1, "t.aaaaa1"),
        ev.MessageCompleted(run_id="t.aaaaa1", message_id="a1", text="old answer"),
        ev.RunCompleted(run_id="t.aaaaa1"),
        ev.RunRequested(run_id="t.aaaaa2", message_id="u1", reply_id="a2", agent="assistant"),
    )
    prompt = prompt_for(view, "t.aaaaa2")
    assert prompt.messages == (ChatMessage("user", "question 1"),)
    assert prompt.question == "question 1"


def answered(n: int, run: str, text: str) -> list[ev.Event]:
    return [
        ev.MessageCompleted(run_id=run, message_id=f"a{n}", text=text),
        ev.RunCompleted(run_id=run),
    ]


def test_an_edited_message_is_answered_on_its_own_branch() -> None:
    """Editing question 2 forks after question 1: the new version's answer sees question 1
    and its answer, not question 2's first version, its answer or what followed it."""
    view = view_of(
        *asked(1, "t.aaaaa1"),
        *answered(1, "t.aaaaa1", "answer 1"),
        *asked(2, "t.aaaaa2"),
        *answered(2, "t.aaaaa2", "answer 2"),
        *asked(3, "t.aaaaa3"),
        *answered(3, "t.aaaaa3", "answer 3"),
        ev.MessageSent(
            message_id="u4", content="question 2, edited", run_id="t.aaaaa4", edit_of="u2"
        ),
        ev.RunRequested(run_id="t.aaaaa4", message_id="u4", reply_id="a4", agent="assistant"),
    )
    assert [m.parent_id for m in view.messages if m.role == "user"] == [None, "u1", "u2", "u1"]
    prompt = prompt_for(view, "t.aaaaa4")
    assert prompt.messages == (
        ChatMessage("user", "question 1"),
        ChatMessage("assistant", "answer 1"),
        ChatMessage("user", "question 2, edited"),
    )
    assert prompt.question == "question 2, edited"


def test_a_message_after_an_edit_continues_the_new_branch() -> None:
    view = view_of(
        *asked(1, "t.aaaaa1"),
        *answered(1, "t.aaaaa1", "answer 1"),
        ev.MessageSent(
            message_id="u2", content="question 1, edited", run_id="t.aaaaa2", edit_of="u1"
        ),
        ev.RunRequested(run_id="t.aaaaa2", message_id="u2", reply_id="a2", agent="assistant"),
        *answered(2, "t.aaaaa2", "answer 1, edited"),
        *asked(3, "t.aaaaa3"),
    )
    assert view.messages[-2].parent_id == "u2"
    assert prompt_for(view, "t.aaaaa3").messages == (
        ChatMessage("user", "question 1, edited"),
        ChatMessage("assistant", "answer 1, edited"),
        ChatMessage("user", "question 3"),
    )


def test_a_reply_on_an_earlier_branch_follows_the_message_it_names() -> None:
    """Paged back to question 1's first version, the person goes on from there."""
    view = view_of(
        *asked(1, "t.aaaaa1"),
        *answered(1, "t.aaaaa1", "answer 1"),
        ev.MessageSent(
            message_id="u2", content="question 1, edited", run_id="t.aaaaa2", edit_of="u1"
        ),
        ev.RunRequested(run_id="t.aaaaa2", message_id="u2", reply_id="a2", agent="assistant"),
        *answered(2, "t.aaaaa2", "answer 1, edited"),
        ev.MessageSent(message_id="u3", content="question 3", run_id="t.aaaaa3", parent_id="u1"),
        ev.RunRequested(run_id="t.aaaaa3", message_id="u3", reply_id="a3", agent="assistant"),
    )
    assert prompt_for(view, "t.aaaaa3").messages == (
        ChatMessage("user", "question 1"),
        ChatMessage("assistant", "answer 1"),
        ChatMessage("user", "question 3"),
    )


def test_only_the_newest_answer_to_an_earlier_message_is_in_the_conversation() -> None:
    """A regeneration replaces the answer it regenerates, in its question's place."""
    view = view_of(
        *asked(1, "t.aaaaa1"),
        *answered(1, "t.aaaaa1", "old answer 1"),
        *asked(2, "t.aaaaa2"),
        *answered(2, "t.aaaaa2", "answer 2"),
        ev.RunRequested(run_id="t.aaaaa5", message_id="u1", reply_id="a5", agent="assistant"),
        *answered(5, "t.aaaaa5", "new answer 1"),
        *asked(3, "t.aaaaa3"),
    )
    assert prompt_for(view, "t.aaaaa3").messages == (
        ChatMessage("user", "question 1"),
        ChatMessage("assistant", "new answer 1"),
        ChatMessage("user", "question 2"),
        ChatMessage("assistant", "answer 2"),
        ChatMessage("user", "question 3"),
    )


def test_the_agents_own_model_settings_go_with_its_prompt() -> None:
    """The agents file's optional model, max_tokens and temperature reach the provider."""
    view = view_of(*asked(1, "t.aaaaa1"))
    tuned = agent_named("assistant").model_copy(
        update={"model": "claude-other", "max_tokens": 9, "temperature": 0.5}
    )
    with patch("consumers.prompt.agent_named", return_value=tuned):
        prompt = prompt_for(view, "t.aaaaa1")
    assert (prompt.model, prompt.max_tokens, prompt.temperature) == ("claude-other", 9, 0.5)
    assert prompt_for(view, "t.aaaaa1").model == agent_named("assistant").model


def test_a_parent_that_is_not_an_earlier_user_message_is_taken_as_none() -> None:
    """An imported history may name anything: the message then follows the newest one."""
    view = view_of(
        *asked(1, "t.aaaaa1"),
        ev.MessageSent(message_id="u2", content="q2", run_id="t.aaaaa2", parent_id="u9"),
        ev.MessageSent(message_id="u3", content="q3", run_id="t.aaaaa3", parent_id="a1"),
        ev.MessageSent(message_id="u4", content="q4", run_id="t.aaaaa4", edit_of="u9"),
        ev.MessageSent(message_id="u5", content="q5", run_id="t.aaaaa5", parent_id="u5"),
    )
    assert [m.parent_id for m in view.messages if m.role == "user"] == [
        None,
        "u1",
        "u2",
        "u3",
        "u4",
    ]
