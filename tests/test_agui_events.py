"""The AG-UI translation (service/agui_events.py) on plain event lists, as the API shows
events: what each of ours becomes, and that every run closes as the protocol requires."""

from __future__ import annotations

from typing import Any

from service.agui_events import Translation, interrupt_id, parse_interrupt_id

RUN = "t1.abc123"
OTHER = "t1.def456"


def translate(events: list[dict[str, Any]], runs: set[str] | None = None) -> list[dict[str, Any]]:
    translation = Translation("t1", "agui-run", runs or {RUN})
    out = translation.start()
    for event in events:
        out += translation.feed(event)
    return out


def kinds(out: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in out]


def requested(run: str = RUN, reply: str = "m2") -> dict[str, Any]:
    return {"type": "run.requested", "run_id": run, "message_id": "m1", "reply_id": reply}


def delta(
    text: str, seq: int, run: str = RUN, message: str = "m2", attempt: int = 1
) -> dict[str, Any]:
    return {
        "type": "message.delta",
        "run_id": run,
        "message_id": message,
        "seq": seq,
        "text": text,
        "attempt": attempt,
    }


def test_a_streamed_answer_is_one_text_message_then_run_finished() -> None:
    out = translate(
        [
            {"type": "message.sent", "message_id": "m1", "content": "hi"},
            requested(),
            {"type": "run.started", "run_id": RUN, "attempt": 1, "worker": "w", "token": 1},
            delta("Hello ", 0),
            delta("world.", 1),
            {
                "type": "message.completed",
                "run_id": RUN,
                "message_id": "m2",
                "text": "Hello world.",
            },
            {
                "type": "model.usage",
                "run_id": RUN,
                "agent": "assistant",
                "model": "scripted",
                "input_tokens": 3,
                "output_tokens": 2,
                "cache_read_tokens": 1,
            },
            {"type": "run.completed", "run_id": RUN},
        ]
    )
    assert kinds(out) == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert out[0] == {"type": "RUN_STARTED", "threadId": "t1", "runId": "agui-run"}
    assert out[1] == {"type": "TEXT_MESSAGE_START", "messageId": "m2", "role": "assistant"}
    assert "".join(e["delta"] for e in out if e["type"] == "TEXT_MESSAGE_CONTENT") == "Hello world."
    assert out[-1]["outcome"] == {"type": "success"}
    # Cache reads are a part of AG-UI's inputTokens, not beside them.
    assert out[-1]["usage"] == [
        {
            "model": "scripted",
            "inputTokens": 4,
            "outputTokens": 2,
            "totalTokens": 6,
            "cachedInputTokens": 1,
            "cacheWriteInputTokens": 0,
        }
    ]


def test_other_runs_events_are_not_this_runs() -> None:
    out = translate(
        [requested(OTHER), delta("not mine", 0, run=OTHER), requested(), delta("mine", 0)]
    )
    assert [e.get("delta") for e in out if e["type"] == "TEXT_MESSAGE_CONTENT"] == ["mine"]


def test_a_tool_call_and_its_result() -> None:
    out = translate(
        [
            requested(),
            {
                "type": "tool.called",
                "run_id": RUN,
                "call_id": "c1",
                "tool": "calculator",
                "args": {"expression": "2+3"},
            },
            {"type": "tool.result", "run_id": RUN, "call_id": "c1", "result": 5},
            {
                "type": "tool.result",
                "run_id": RUN,
                "call_id": "c2",
                "result": "text",
                "is_error": True,
            },
            delta("calculator returned 5.", 0),
            {"type": "message.completed", "run_id": RUN, "message_id": "m2", "text": "x"},
            {"type": "run.completed", "run_id": RUN},
        ]
    )
    assert out[1:6] == [
        {
            "type": "TOOL_CALL_START",
            "toolCallId": "c1",
            "toolCallName": "calculator",
            "parentMessageId": "m2",
        },
        {"type": "TOOL_CALL_ARGS", "toolCallId": "c1", "delta": '{"expression":"2+3"}'},
        {"type": "TOOL_CALL_END", "toolCallId": "c1"},
        {
            "type": "TOOL_CALL_RESULT",
            "messageId": "c1.result",
            "toolCallId": "c1",
            "content": "5",
            "role": "tool",
        },
        {
            "type": "TOOL_CALL_RESULT",
            "messageId": "c2.result",
            "toolCallId": "c2",
            "content": "text",
            "role": "tool",
        },
    ]


def test_an_approval_wait_is_an_interrupt_outcome() -> None:
    out = translate(
        [
            requested(),
            {
                "type": "tool.called",
                "run_id": RUN,
                "call_id": "c1",
                "tool": "fetch_url",
                "args": {},
            },
            {
                "type": "run.waiting",
                "run_id": RUN,
                "waiting_for": "approval",
                "call_id": "c1",
                "tool": "fetch_url",
                "args": {"url": "https://example.invalid/"},
            },
            delta("never seen", 0),
        ]
    )
    assert kinds(out)[-1] == "RUN_FINISHED"
    outcome = out[-1]["outcome"]
    assert outcome["type"] == "interrupt"
    [interrupt] = outcome["interrupts"]
    assert interrupt["id"] == f"{RUN}/approval/c1"
    assert interrupt["toolCallId"] == "c1"
    assert interrupt["reason"] == "tool_approval"
    assert interrupt["metadata"] == {
        "tool": "fetch_url",
        "args": {"url": "https://example.invalid/"},
    }
    assert "TEXT_MESSAGE_START" not in kinds(out)  # closed: nothing after the outcome


def test_a_timer_wait_goes_on_streaming_and_a_workflow_wait_interrupts() -> None:
    out = translate(
        [
            {"type": "run.waiting", "run_id": RUN, "waiting_for": "timer", "until_ms": 5},
            {"type": "run.resumed", "run_id": RUN},
            {"type": "run.waiting", "run_id": RUN, "waiting_for": "approval", "op": 2},
        ]
    )
    assert kinds(out) == ["RUN_STARTED", "RUN_FINISHED"]
    [interrupt] = out[-1]["outcome"]["interrupts"]
    assert interrupt["id"] == f"{RUN}/approval"
    assert interrupt["reason"] == "signal"


def test_interrupt_ids_say_what_answers_them() -> None:
    assert parse_interrupt_id(interrupt_id(RUN, "approval", "c1")) is not None
    call = parse_interrupt_id(f"{RUN}/approval/c1")
    assert call is not None and (call.run_id, call.signal, call.call_id) == (RUN, "approval", "c1")
    signal = parse_interrupt_id(f"{RUN}/go")
    assert signal is not None and (signal.signal, signal.call_id) == ("go", None)
    assert parse_interrupt_id("nothing") is None
    assert parse_interrupt_id(f"{RUN}/go/extra") is None


def test_a_failure_closes_what_is_open_then_run_error() -> None:
    out = translate(
        [
            requested(),
            {"type": "step.started", "run_id": RUN, "step": "draft", "op": 0, "kind": "agent"},
            delta("Some text", 0),
            {"type": "run.failed", "run_id": RUN, "reason": "the model is unavailable"},
        ]
    )
    assert kinds(out)[-3:] == ["TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_ERROR"]
    assert out[-1]["message"] == "the model is unavailable"


def test_a_cancel_is_the_cancelled_outcome() -> None:
    out = translate([requested(), delta("Par", 0), {"type": "run.cancelled", "run_id": RUN}])
    assert kinds(out)[-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    assert out[-1]["outcome"] == {"type": "cancelled"}


def test_workflow_steps_open_and_close_and_a_result_is_returned() -> None:
    step = {"run_id": RUN, "kind": "step"}
    out = translate(
        [
            {"type": "step.started", "step": "analyze", "op": 0, **step},
            {"type": "step.completed", "step": "analyze", "op": 0, **step},
            {"type": "step.started", "step": "finalize", "op": 2, **step},
            {"type": "step.failed", "step": "finalize", "op": 2, "error": "x", **step},
            {"type": "step.started", "step": "finalize", "op": 2, "attempt": 2, **step},
            {"type": "step.completed", "step": "finalize", "op": 2, **step},
            {"type": "step.completed", "step": "unknown", "op": 9, **step},
            {"type": "run.completed", "run_id": RUN, "result": {"words": 3}},
        ]
    )
    assert [(e["type"], e.get("stepName")) for e in out[1:-1]] == [
        ("STEP_STARTED", "analyze"),
        ("STEP_FINISHED", "analyze"),
        ("STEP_STARTED", "finalize"),
        ("STEP_FINISHED", "finalize"),
        ("STEP_STARTED", "finalize"),
        ("STEP_FINISHED", "finalize"),
    ]
    assert out[-1]["result"] == {"words": 3}


def test_a_retried_attempts_text_is_a_message_of_its_own() -> None:
    out = translate(
        [
            requested(),
            delta("first try", 0),
            {"type": "run.retrying", "run_id": RUN, "attempt": 2, "delay_ms": 1, "reason": "x"},
            delta("second", 0, attempt=2),
            {"type": "message.completed", "run_id": RUN, "message_id": "m2", "text": "second"},
            {"type": "run.completed", "run_id": RUN},
        ]
    )
    opened = [(e["type"], e["messageId"]) for e in out if e["type"].startswith("TEXT_MESSAGE_")]
    assert opened == [
        ("TEXT_MESSAGE_START", "m2"),
        ("TEXT_MESSAGE_CONTENT", "m2"),
        ("TEXT_MESSAGE_END", "m2"),
        ("TEXT_MESSAGE_START", "m2.a2"),
        ("TEXT_MESSAGE_CONTENT", "m2.a2"),
        ("TEXT_MESSAGE_END", "m2.a2"),
    ]


def test_several_runs_finish_when_all_have_settled() -> None:
    translation = Translation("t1", "r", {RUN, OTHER})
    assert translation.feed({"type": "run.completed", "run_id": RUN}) == []
    assert translation.done is False
    out = translation.feed({"type": "run.completed", "run_id": OTHER})
    assert kinds(out) == ["RUN_FINISHED"]
    assert getattr(translation, "done") is True  # noqa: B009 (mypy narrowed it to False)
    assert translation.feed({"type": "run.completed", "run_id": OTHER}) == []


def test_a_message_completed_without_deltas_is_sent_whole() -> None:
    out = translate(
        [
            {"type": "message.completed", "run_id": RUN, "message_id": "m2", "text": "Whole."},
            {"type": "message.completed", "run_id": RUN, "message_id": "m3", "text": ""},
        ]
    )
    assert kinds(out) == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
    ]
