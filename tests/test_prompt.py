"""The prompt a run sends: the conversation up to the message it answers."""

from __future__ import annotations

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
