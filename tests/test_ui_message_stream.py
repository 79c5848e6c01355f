"""The AI SDK UI message stream (service/ui_message_stream.py), translated from plain
event lists: the chunks of an answer, a tool call, an approval, a hand-off, several
agents, a retry, a failure and a cancel."""

from __future__ import annotations

from typing import Any

from service.ui_message_stream import Answer, sse, translate
from slipstream import codec
from slipstream import events as ev

RUN, OTHER = "t1.aaaaaa", "t1.bbbbbb"


def plain(*events: ev.Event) -> list[dict[str, Any]]:
    return [codec.event_json(e) for e in events]


def deltas(message_id: str, *texts: str, run: str = RUN, attempt: int = 1) -> list[ev.Event]:
    return [
        ev.MessageDelta(run_id=run, message_id=message_id, seq=i, text=t, attempt=attempt)
        for i, t in enumerate(texts, 1)
    ]


def kinds(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["type"] for c in chunks]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["delta"] for c in chunks if c["type"] == "text-delta")


def test_an_answer_is_start_text_and_finish_with_its_usage() -> None:
    answer = Answer("t1", "m2", {RUN: "assistant"})
    chunks = translate(
        answer,
        plain(
            ev.RunStarted(run_id=RUN, attempt=1, worker="w", token=1),
            *deltas("m2", "Hello", " there"),
            ev.ModelUsage(
                run_id=RUN, agent="assistant", model="x", input_tokens=7, output_tokens=2
            ),
            ev.MessageCompleted(run_id=RUN, message_id="m2", text="Hello there"),
            ev.RunCompleted(run_id=RUN),
            ev.MessageDelta(run_id=RUN, message_id="m2", seq=3, text="late"),
        ),
    )
    assert kinds(chunks) == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    assert chunks[0] == {
        "type": "start",
        "messageId": "m2",
        "messageMetadata": {"threadId": "t1", "runs": [{"runId": RUN, "agent": "assistant"}]},
    }
    assert {c.get("id") for c in chunks[2:6]} == {"m2"}
    assert text_of(chunks) == "Hello there"
    finish = chunks[-1]
    assert finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["usage"]["inputTokens"] == 7
    assert finish["messageMetadata"]["usage"]["totalTokens"] == 9
    assert finish["messageMetadata"]["runs"][0]["status"] == "completed"
    assert answer.done
    assert sse(chunks[1]) == b'data: {"type":"start-step"}\n\n'


def test_other_runs_events_are_not_part_of_the_answer() -> None:
    chunks = translate(
        Answer("t1", "m2", {RUN: "assistant"}),
        plain(*deltas("m9", "not mine", run=OTHER), ev.RunCompleted(run_id=OTHER)),
    )
    assert kinds(chunks) == ["start", "start-step"]


def test_a_tool_call_its_result_and_the_text_after_it_in_a_new_step() -> None:
    chunks = translate(
        Answer("t1", "m2", {RUN: "researcher"}),
        plain(
            *deltas("m2", "Let me count. "),
            ev.ToolCalled(run_id=RUN, call_id="c1", tool="calculator", args={"expression": "2+3"}),
            ev.ToolResult(run_id=RUN, call_id="c1", result=5),
            ev.ToolCalled(run_id=RUN, call_id="c2", tool="calculator", args={"expression": "1/0"}),
            ev.ToolResult(run_id=RUN, call_id="c2", result="division by zero", is_error=True),
            ev.MessageDelta(run_id=RUN, message_id="m2", seq=2, text="It is 5."),
            ev.MessageCompleted(run_id=RUN, message_id="m2", text="Let me count. It is 5."),
            ev.RunCompleted(run_id=RUN),
        ),
    )
    assert kinds(chunks) == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-available",
        "tool-output-available",
        "finish-step",
        "start-step",
        "tool-input-available",
        "tool-output-error",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    assert chunks[5] == {
        "type": "tool-input-available",
        "toolCallId": "c1",
        "toolName": "calculator",
        "input": {"expression": "2+3"},
        "dynamic": True,
    }
    assert chunks[6]["output"] == 5
    assert chunks[10]["errorText"] == "division by zero"
    assert chunks[13]["id"] == "m2:1"  # the second text part of the message
    assert text_of(chunks) == "Let me count. It is 5."


def test_an_approval_request_pauses_and_a_denial_is_said_once() -> None:
    waiting = ev.RunWaiting(
        run_id=RUN, waiting_for="approval", call_id="c1", tool="fetch_url", args={"url": "u"}
    )
    answer = Answer("t1", "m2", {RUN: "researcher"})
    chunks = translate(
        answer,
        plain(
            ev.ToolCalled(run_id=RUN, call_id="c1", tool="fetch_url", args={"url": "u"}), waiting
        ),
    )
    assert chunks[-1] == {"type": "tool-approval-request", "approvalId": "c1", "toolCallId": "c1"}
    assert answer.waiting_call == "c1"
    assert kinds(answer.paused()) == ["finish-step", "finish"]
    assert answer.done

    # The rest, after a person said no: the stream the approval's answer gets.
    rest = Answer("t1", "m2", {RUN: "researcher"}, continuing=True)
    chunks = translate(
        rest,
        plain(
            ev.SignalReceived(
                run_id=RUN, name="approval", payload={"call_id": "c1", "approved": False}
            ),
            ev.RunResumed(run_id=RUN),
            ev.ToolResult(run_id=RUN, call_id="c1", result="a person denied it", is_error=True),
            *deltas("m2", "Fine."),
            ev.RunCompleted(run_id=RUN),
        ),
    )
    assert chunks[0] == {"type": "start", "messageId": "m2"}  # the client has the message
    assert kinds(chunks)[2:] == [
        "tool-output-denied",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]


def test_a_handoff_is_a_new_step_and_a_message_of_the_agent_handed_to() -> None:
    chunks = translate(
        Answer("t1", "m2", {RUN: "researcher"}),
        plain(
            *deltas("m2", "Over to the writer."),
            ev.AgentHandoff(run_id=RUN, from_agent="researcher", to_agent="writer"),
            ev.MessageCompleted(run_id=RUN, message_id="m2", text="Over to the writer."),
            ev.MessageDelta(run_id=RUN, message_id="m3", seq=1, text="Written.", agent="writer"),
            ev.MessageCompleted(run_id=RUN, message_id="m3", text="Written.", agent="writer"),
            ev.RunCompleted(run_id=RUN),
        ),
    )
    assert kinds(chunks)[4:9] == [
        "text-end",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
    ]
    assert chunks[7]["id"] == "m3"
    assert chunks[7]["providerMetadata"] == {"slipstream": {"agent": "writer", "messageId": "m3"}}


def test_several_agents_share_one_step_and_finish_when_all_have() -> None:
    answer = Answer("t1", "m2", {RUN: "assistant", OTHER: "writer"})
    chunks = translate(
        answer,
        plain(
            ev.MessageDelta(run_id=RUN, message_id="m2", seq=1, text="A"),
            ev.MessageDelta(run_id=OTHER, message_id="m3", seq=1, text="B"),
            ev.MessageCompleted(run_id=RUN, message_id="m2", text="A"),
            ev.RunCompleted(run_id=RUN),
        ),
    )
    assert not answer.done
    assert "finish-step" not in kinds(chunks)
    assert {
        c["providerMetadata"]["slipstream"]["agent"] for c in chunks if c["type"] == "text-start"
    } == {"assistant", "writer"}
    end = answer.apply(codec.event_json(ev.RunCompleted(run_id=OTHER)))
    assert kinds(end) == ["text-end", "finish-step", "finish"]
    assert answer.done


def test_a_new_attempt_writes_its_text_in_a_new_part() -> None:
    chunks = translate(
        Answer("t1", "m2", {RUN: "assistant"}),
        plain(
            *deltas("m2", "Half an ans"),
            ev.RunRetrying(run_id=RUN, attempt=2, delay_ms=10, reason="the model failed"),
            ev.RunStarted(run_id=RUN, attempt=2, worker="w", token=2),
            *deltas("m2", "A whole answer.", attempt=2),
            ev.MessageDelta(run_id=RUN, message_id="m2", seq=2, text="stale", attempt=1),
        ),
    )
    starts = [c["id"] for c in chunks if c["type"] == "text-start"]
    assert starts == ["m2", "m2:1"]
    assert [c["delta"] for c in chunks if c["type"] == "text-delta"] == [
        "Half an ans",
        "A whole answer.",
    ]


def test_a_failure_is_an_error_with_its_reason_and_a_cancel_an_abort() -> None:
    failed = translate(
        Answer("t1", "m2", {RUN: "assistant"}),
        plain(*deltas("m2", "Hal"), ev.RunFailed(run_id=RUN, reason="the model is unreachable")),
    )
    assert kinds(failed)[-5:] == ["text-delta", "text-end", "finish-step", "error", "finish"]
    assert failed[-2] == {"type": "error", "errorText": "the model is unreachable"}
    assert failed[-1]["finishReason"] == "error"

    cancelled = translate(
        Answer("t1", "m2", {RUN: "assistant"}),
        plain(*deltas("m2", "Hal"), ev.RunCancelled(run_id=RUN, reason="stopped by a user")),
    )
    assert cancelled[-1] == {"type": "abort", "reason": "stopped by a user"}


def test_a_message_written_whole_is_one_text_part() -> None:
    chunks = translate(
        Answer("t1", "m2", {RUN: "research"}),
        plain(
            ev.MessageCompleted(run_id=RUN, message_id="m2", text="Done."),
            ev.RunCompleted(run_id=RUN),
        ),
    )
    assert kinds(chunks)[2:5] == ["text-start", "text-delta", "text-end"]
    assert text_of(chunks) == "Done."
