"""The event codec and schema: every event type round-trips through a flat entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slipstream import codec
from slipstream import events as ev

EXAMPLES: list[ev.Event] = [
    ev.ThreadCreated(title="t", owner="alice"),
    ev.ThreadRenamed(title="better"),
    ev.ThreadArchived(archived=True),
    ev.ThreadMemberAdded(user="bob", by="alice"),
    ev.ThreadMemberRemoved(user="bob", by="bob"),
    ev.MessageSent(
        message_id="m", content="hi", agent="assistant", run_id="t.aaaaaa", client_id="c"
    ),
    ev.RunRequested(run_id="t.aaaaaa", message_id="m", reply_id="r", agent="assistant"),
    ev.RunStarted(run_id="t.aaaaaa", attempt=1, worker="host:1:abc", token=3),
    ev.MessageDelta(run_id="t.aaaaaa", message_id="r", seq=1, text="Hé ✓"),
    ev.MessageCompleted(run_id="t.aaaaaa", message_id="r", text="done", agent="assistant"),
    ev.RunCompleted(run_id="t.aaaaaa"),
    ev.RunCancelRequested(run_id="t.aaaaaa"),
    ev.RunCancelled(run_id="t.aaaaaa", reason="by user"),
    ev.RunFailed(run_id="t.aaaaaa", reason="boom"),
    ev.RunRetrying(run_id="t.aaaaaa", attempt=2, delay_ms=500, reason="overloaded"),
    ev.RunWaiting(run_id="t.aaaaaa", waiting_for="approval"),
    ev.RunResumed(run_id="t.aaaaaa"),
    ev.RunRestarted(run_id="t.aaaaaa", reason="retry"),
    ev.SignalReceived(run_id="t.aaaaaa", name="approval", payload={"ok": True}),
    ev.StepStarted(run_id="t.aaaaaa", step="draft"),
    ev.StepCompleted(run_id="t.aaaaaa", step="draft", result=[1, "two"]),
    ev.StepFailed(run_id="t.aaaaaa", step="draft", error="ValueError: x"),
    ev.TimerScheduled(run_id="t.aaaaaa", due_ms=5, purpose="sleep"),
    ev.TimerFired(run_id="t.aaaaaa", due_ms=5),
    ev.AgentRouted(message_id="m", agents=["researcher"], by="rule", reason="matched"),
    ev.AgentHandoff(run_id="t.aaaaaa", from_agent="a", to_agent="b"),
    ev.ToolCalled(run_id="t.aaaaaa", call_id="c1", tool="search", args={"q": "x"}),
    ev.ToolResult(run_id="t.aaaaaa", call_id="c1", result="found"),
    ev.ModelUsage(
        run_id="t.aaaaaa",
        agent="researcher",
        model="scripted",
        input_tokens=12,
        output_tokens=30,
        cache_read_tokens=4,
        attempt=2,
    ),
    ev.ContextTrimmed(
        run_id="t.aaaaaa",
        agent="assistant",
        dropped_messages=6,
        kept_messages=3,
        estimated_tokens=410,
        budget=500,
    ),
]


def test_examples_cover_every_event_type() -> None:
    assert sorted(e.type for e in EXAMPLES) == ev.event_types()


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.type)
def test_round_trip(event: ev.Event) -> None:
    entry = codec.encode(event)
    assert entry["type"] == event.type and entry["eid"] == event.event_id
    assert codec.decode("k", "1-0", entry) == event


def test_run_and_agent_are_flat_fields() -> None:
    entry = codec.encode(
        ev.MessageCompleted(run_id="t.aaaaaa", message_id="r", text="x", agent="assistant")
    )
    assert (entry["run"], entry["agent"]) == ("t.aaaaaa", "assistant")
    assert json.loads(entry["body"]) == {"message_id": "r", "text": "x"}


def test_events_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        EXAMPLES[0].title = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"type": "run.completed", "v": "1", "body": "[1]"}, "not a JSON object"),
        ({"type": "run.completed", "v": "1", "body": "{"}, "not JSON"),
        ({"type": "run.completed", "v": "9", "body": "{}", "run": "r"}, "schema version 9"),
        ({"type": "run.completed", "v": "x"}, "bad schema version"),
        ({"type": "run.completed", "v": "1", "body": "{}"}, "run_id: Field required"),
        ({"type": "no.such", "v": "1", "body": "{}"}, "no.such"),
    ],
)
def test_unreadable_entries_name_stream_and_id(fields: dict[str, str], reason: str) -> None:
    result = codec.decode("ss:{p01}:thread:t", "5-1", fields)
    assert isinstance(result, codec.Unreadable)
    assert (result.stream, result.id) == ("ss:{p01}:thread:t", "5-1")
    assert reason in result.reason


def test_bytes_from_redis_decode_too() -> None:
    entry = {k.encode(): v.encode() for k, v in codec.encode(EXAMPLES[4]).items()}
    assert codec.decode("k", "1-0", entry) == EXAMPLES[4]


def test_exported_schema_is_current() -> None:
    path = Path(__file__).resolve().parent.parent / "static" / "events.schema.json"
    assert json.loads(path.read_text()) == ev.json_schema(), (
        "static/events.schema.json is stale: run `python -m slipstream.schema > "
        "static/events.schema.json`"
    )


@pytest.mark.parametrize(
    "delta",
    [
        ev.MessageDelta(run_id="t.aaaaaa", message_id="r", seq=3, text="Hé ✓"),
        ev.MessageDelta(
            run_id="t.aaaaaa", message_id="r", seq=1, text="x", attempt=2, agent="research"
        ),
    ],
)
def test_the_fast_delta_path_gives_what_decoding_gives(delta: ev.MessageDelta) -> None:
    entry = codec.encode(delta)
    assert codec.delta_json(entry) == codec.event_json(codec.decode("k", "1-0", entry))


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "message.delta", "v": "1", "eid": "e", "run": "r", "body": '{"seq": "1"}'},
        {
            "type": "message.delta",
            "v": "1",
            "eid": "e",
            "run": "r",
            "body": '{"seq": 1, "text": "x", "message_id": "m", "extra": 1}',
        },
        {
            "type": "message.delta",
            "v": "2",
            "eid": "e",
            "run": "r",
            "body": '{"seq": 1, "text": "x", "message_id": "m"}',
        },
        {"type": "run.completed", "v": "1", "eid": "e", "run": "r", "body": "{}"},
    ],
)
def test_anything_unusual_leaves_the_fast_path(fields: dict[str, str]) -> None:
    assert codec.delta_json(fields) is None
