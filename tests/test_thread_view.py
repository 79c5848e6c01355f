"""The thread-view fold, on plain lists of events: no Redis."""

from __future__ import annotations

import pytest

from projections.thread_view import TOOL_TEXT_CHARS, ThreadView, fold, fold_into
from slipstream import events as ev
from slipstream.codec import Unreadable
from slipstream.store import Stored

RUN = "t1.aaaaaa"


def stored(*events: ev.Event | Unreadable) -> list[Stored]:
    return [Stored(f"1000-{i}", e) for i, e in enumerate(events)]


def opening() -> list[ev.Event]:
    return [
        ev.ThreadCreated(title=""),
        ev.MessageSent(message_id="m1", content="Hello  there\nfriend", run_id=RUN),
        ev.RunRequested(run_id=RUN, message_id="m1", reply_id="r1", agent="assistant"),
        ev.RunStarted(run_id=RUN, attempt=1, worker="h:1:a", token=1),
    ]


def delta(seq: int, text: str, attempt: int = 1) -> ev.MessageDelta:
    return ev.MessageDelta(run_id=RUN, message_id="r1", seq=seq, text=text, attempt=attempt)


def view_of(*events: ev.Event | Unreadable) -> ThreadView:
    return fold(ThreadView.empty("t1", "ss:{p00}:thread:t1"), stored(*events))


def test_a_streamed_answer_completes() -> None:
    view = view_of(
        *opening(),
        delta(1, "Hi. "),
        delta(2, "Bye."),
        ev.MessageCompleted(run_id=RUN, message_id="r1", text="Hi. Bye."),
        ev.RunCompleted(run_id=RUN),
    )
    user, reply = view.messages
    assert (user.role, user.status, user.content) == ("user", "completed", "Hello  there\nfriend")
    assert (reply.role, reply.status, reply.content) == ("assistant", "completed", "Hi. Bye.")
    assert view.runs[RUN].status == "completed"
    assert view.title == "Hello there friend"
    assert view.version == 8 and view.last_event_id == "1000-7"


def test_while_streaming_the_reply_shows_the_text_so_far() -> None:
    view = view_of(*opening(), delta(1, "Hi. "))
    assert (view.messages[-1].status, view.messages[-1].content) == ("streaming", "Hi. ")
    assert view.active_run() == RUN


def test_a_repeated_delta_is_applied_once() -> None:
    view = view_of(*opening(), delta(1, "Hi. "), delta(1, "Hi. "), delta(2, "Bye."))
    assert view.messages[-1].content == "Hi. Bye."


def test_folding_the_same_positions_twice_changes_nothing() -> None:
    events = stored(*opening(), delta(1, "Hi. "))
    once = fold(ThreadView.empty("t1", "k"), events)
    assert fold(once, events) == once


def test_fold_does_not_touch_its_input() -> None:
    empty = ThreadView.empty("t1", "k")
    fold(empty, stored(*opening()))
    assert empty == ThreadView.empty("t1", "k")


def test_a_new_attempt_shows_only_its_own_text() -> None:
    view = view_of(
        *opening(),
        delta(1, "Half an ans"),
        ev.RunStarted(run_id=RUN, attempt=2, worker="h:2:b", token=2),
        delta(1, "Whole.", attempt=2),
    )
    assert view.messages[-1].content == "Whole."
    assert view.runs[RUN].attempt == 2 and view.runs[RUN].worker == "h:2:b"


def test_a_late_delta_of_an_old_attempt_is_ignored() -> None:
    view = view_of(
        *opening(),
        ev.RunStarted(run_id=RUN, attempt=2, worker="w", token=2),
        delta(1, "new", attempt=2),
        delta(2, "old", attempt=1),
    )
    assert view.messages[-1].content == "new"


def test_cancel_keeps_the_partial_text() -> None:
    view = view_of(*opening(), delta(1, "Part"), ev.RunCancelled(run_id=RUN, reason="stop"))
    reply = view.messages[-1]
    assert (reply.status, reply.content) == ("cancelled", "Part")
    assert view.runs[RUN].reason == "stop"
    assert view.active_run() is None


def test_failure_is_shown_with_its_reason() -> None:
    view = view_of(*opening(), ev.RunFailed(run_id=RUN, reason="model error: overloaded"))
    assert view.messages[-1].status == "failed"
    assert view.runs[RUN].reason == "model error: overloaded"


def test_a_queued_run_has_a_pending_reply() -> None:
    view = view_of(*opening()[:3])
    assert view.messages[-1].status == "pending"
    assert view.runs[RUN].status == "queued"


def test_unreadable_entries_are_kept_as_problems() -> None:
    bad = Unreadable(stream="k", id="1000-1", reason="body is not JSON")
    view = view_of(ev.ThreadCreated(title="T"), bad)
    assert [p.reason for p in view.problems] == ["body is not JSON"]
    assert view.last_event_id == "1000-1" and view.title == "T"


def test_summary_names_the_active_run() -> None:
    summary = view_of(*opening()).summary()
    assert (summary.title, summary.messages, summary.active_run) == ("Hello there friend", 2, RUN)


def test_a_retry_shows_its_reason_and_a_restart_queues_again() -> None:
    retrying = view_of(
        *opening(),
        delta(1, "Hal"),
        ev.RunRetrying(run_id=RUN, attempt=2, delay_ms=500, reason="overloaded"),
    )
    assert (retrying.runs[RUN].status, retrying.runs[RUN].reason) == ("retrying", "overloaded")
    assert retrying.messages[-1].status == "pending"
    restarted = view_of(
        *opening(), ev.RunFailed(run_id=RUN, reason="boom"), ev.RunRestarted(run_id=RUN)
    )
    run = restarted.runs[RUN]
    assert (run.status, run.reason, run.ended_at) == ("queued", None, None)
    assert restarted.messages[-1].status == "pending"


def test_waiting_and_resuming() -> None:
    waiting = view_of(*opening(), ev.RunWaiting(run_id=RUN, waiting_for="approval"))
    assert (waiting.runs[RUN].status, waiting.runs[RUN].waiting_for) == ("waiting", "approval")
    assert waiting.messages[-1].status == "waiting"
    resumed = view_of(
        *opening(), ev.RunWaiting(run_id=RUN, waiting_for="approval"), ev.RunResumed(run_id=RUN)
    )
    assert (resumed.runs[RUN].status, resumed.runs[RUN].waiting_for) == ("running", None)
    assert resumed.messages[-1].status == "streaming"


def test_a_workflow_reply_survives_waiting_and_a_new_attempt() -> None:
    view = view_of(
        *opening(),
        delta(1, "Draft."),
        ev.MessageCompleted(run_id=RUN, message_id="r1", text="Draft."),
        ev.RunWaiting(run_id=RUN, waiting_for="approval", op=2),
        ev.RunStarted(run_id=RUN, attempt=2, worker="w", token=2),
        ev.RunResumed(run_id=RUN, op=2, reason="signal"),
    )
    reply = view.messages[-1]
    assert (reply.status, reply.content) == ("completed", "Draft.")
    assert view.runs[RUN].status == "running"


def test_routing_lands_on_the_user_message_and_tool_calls_on_the_run() -> None:
    view = view_of(
        *opening()[:2],
        ev.AgentRouted(message_id="m1", agents=["researcher"], by="rule", reason="matched"),
        ev.RunRequested(run_id=RUN, message_id="m1", reply_id="r1", agent="researcher"),
        ev.RunStarted(run_id=RUN, attempt=1, worker="h:1:a", token=1),
        ev.ToolCalled(run_id=RUN, call_id="c1", tool="calculator", args={"expression": "2+3"}),
        ev.ToolCalled(run_id=RUN, call_id="c2", tool="calculator", args={"expression": "1/0"}),
        ev.ToolResult(run_id=RUN, call_id="c1", result=5),
        ev.ToolResult(run_id=RUN, call_id="c2", result="division by zero", is_error=True),
    )
    routed = view.messages[0].routed
    assert routed is not None and (routed.agents, routed.by) == (["researcher"], "rule")
    first, second = view.runs[RUN].tools
    assert (first.tool, first.args, first.status, first.result) == (
        "calculator",
        {"expression": "2+3"},
        "completed",
        5,
    )
    assert (second.status, second.result) == ("failed", "division by zero")


def test_a_call_after_a_hand_off_belongs_to_the_next_turn_and_a_restart_clears_them() -> None:
    calls = [
        ev.ToolCalled(run_id=RUN, call_id="h1", tool="handoff", args={"agent": "writer"}),
        ev.ToolResult(run_id=RUN, call_id="h1", result="handed off to writer"),
        ev.AgentHandoff(run_id=RUN, from_agent="assistant", to_agent="writer", reason="prose"),
        ev.ToolCalled(run_id=RUN, call_id="c1", tool="now", args={"zone": "UTC"}),
    ]
    view = view_of(*opening(), *calls)
    run = view.runs[RUN]
    assert [(call.call_id, call.turn, call.status) for call in run.tools] == [
        ("h1", 0, "completed"),
        ("c1", 1, "running"),
    ]
    assert [(h.from_agent, h.to_agent, h.reason) for h in run.handoffs] == [
        ("assistant", "writer", "prose")
    ]
    restarted = view_of(
        *opening(), *calls, ev.RunFailed(run_id=RUN, reason="boom"), ev.RunRestarted(run_id=RUN)
    )
    assert (restarted.runs[RUN].tools, restarted.runs[RUN].handoffs) == ([], [])


def test_long_texts_in_a_call_are_cut_for_the_view() -> None:
    long = "x" * (TOOL_TEXT_CHARS + 10)
    view = view_of(
        *opening(),
        ev.ToolCalled(run_id=RUN, call_id="c1", tool="fetch_url", args={"url": long}),
        ev.ToolResult(run_id=RUN, call_id="c1", result={"text": [long], "status": 200}),
    )
    (call,) = view.runs[RUN].tools
    assert call.args == {"url": "x" * TOOL_TEXT_CHARS + "…"}
    assert call.result == {"text": ["x" * TOOL_TEXT_CHARS + "…"], "status": 200}


def handed_off() -> list[ev.Event]:
    """A run whose writer handed off to the critic (message "h1"), which is streaming;
    another run's answer ("r2") came between them."""
    other = "t1.bbbbbb"
    return [
        *opening(),
        ev.MessageCompleted(run_id=RUN, message_id="r1", text="", agent="writer"),
        ev.AgentHandoff(run_id=RUN, from_agent="writer", to_agent="critic", reason="review"),
        ev.MessageSent(message_id="m2", content="another", run_id=other),
        ev.RunRequested(run_id=other, message_id="m2", reply_id="r2", agent="assistant"),
        ev.MessageDelta(run_id=RUN, message_id="h1", seq=1, text="Fine. ", agent="critic"),
    ]


@pytest.mark.parametrize(
    ("end", "status"),
    [
        (ev.RunCancelled(run_id=RUN, reason="cancelled by request"), "cancelled"),
        (ev.RunFailed(run_id=RUN, reason="model error: boom"), "failed"),
        (ev.RunRetrying(run_id=RUN, attempt=2, delay_ms=500, reason="overloaded"), "pending"),
    ],
)
def test_the_message_of_the_agent_handed_to_follows_its_run(end: ev.Event, status: str) -> None:
    view = view_of(*handed_off())
    before = len(view.messages)
    changes = fold_into(view, [Stored("1000-99", end)])
    by_id = {m.id: m for m in view.messages}
    assert (by_id["r1"].status, by_id["h1"].status) == ("completed", status)
    assert by_id["h1"].content == "Fine. "
    assert by_id["r2"].status == "pending"  # another run's reply is not this run's
    # The stored view rewrites both of the run's messages, and only those.
    assert len(view.messages) == before
    assert {view.messages[i].id for i in changes.messages} == {"r1", "h1"}


def test_a_completed_run_completes_the_message_handed_to() -> None:
    view = view_of(
        *handed_off(),
        ev.MessageCompleted(run_id=RUN, message_id="h1", text="Fine. ", agent="critic"),
        ev.RunCompleted(run_id=RUN),
    )
    assert [(m.id, m.status) for m in view.messages if m.run_id == RUN] == [
        ("m1", "completed"),
        ("r1", "completed"),
        ("h1", "completed"),
    ]


def test_a_run_keeps_its_model_and_when_it_started_and_first_wrote() -> None:
    """What the chat's answer details show: model, and first-token and total times."""
    events = [
        ev.ThreadCreated(title=""),
        ev.MessageSent(message_id="m1", content="hi", run_id=RUN),
        ev.RunRequested(run_id=RUN, message_id="m1", reply_id="r1", agent="assistant"),
        ev.RunStarted(run_id=RUN, attempt=1, worker="h:1:a", token=1),
        delta(1, "Hi. "),
        delta(2, "Bye."),
        ev.ModelUsage(run_id=RUN, agent="assistant", model="m-1", input_tokens=3, output_tokens=2),
        ev.RunCompleted(run_id=RUN),
    ]
    timed = [Stored(f"{1000 + 10 * i}-0", e) for i, e in enumerate(events)]
    run = fold(ThreadView.empty("t1", "k"), timed).runs[RUN]
    assert (run.requested_at, run.started_at, run.first_token_at, run.ended_at) == (
        1020,
        1030,
        1040,
        1070,
    )
    assert run.model == "m-1"
    assert (run.usage.input_tokens, run.usage.output_tokens) == (3, 2)


def test_a_new_attempt_times_its_first_text_again() -> None:
    view = view_of(
        *opening(),
        delta(1, "Hi. "),
        ev.RunRetrying(run_id=RUN, attempt=1, reason="boom", delay_ms=0),
    )
    assert view.runs[RUN].first_token_at is not None
    retried = fold(
        view,
        [
            Stored("2000-0", ev.RunStarted(run_id=RUN, attempt=2, worker="h:1:a", token=2)),
            Stored("2100-0", delta(1, "Again. ", attempt=2)),
        ],
    )
    assert (retried.runs[RUN].started_at, retried.runs[RUN].first_token_at) == (2000, 2100)


def test_a_delta_rewrites_its_run_only_when_it_is_the_first_text() -> None:
    view = view_of(*opening())
    first = fold_into(view, [Stored("2000-0", delta(1, "Hi. "))])
    later = fold_into(view, [Stored("2000-1", delta(2, "Bye."))])
    assert (first.runs, later.runs) == ({RUN}, set())
    assert first.messages == later.messages == {1}  # the reply
