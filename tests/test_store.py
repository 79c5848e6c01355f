"""The append script's guards and reads, on real Redis and on fakeredis."""

from __future__ import annotations

import pytest

from slipstream import errors
from slipstream import events as ev
from slipstream.codec import Unreadable
from slipstream.keys import WORKERS_GROUP
from slipstream.store import Append, EventStore


async def new_thread(store: EventStore, thread_id: str = "t1") -> str:
    await store.append(Append(thread_id, [ev.ThreadCreated(title="hi")], existence="new"))
    return thread_id


def message(text: str = "hello", **kw: str) -> ev.MessageSent:
    return ev.MessageSent(message_id="m1", content=text, **kw)  # type: ignore[arg-type]


async def test_append_then_read_returns_events_in_order(store: EventStore) -> None:
    await new_thread(store)
    appended = await store.append(Append("t1", [message("a"), message("b")]))
    assert appended.version == 3 and not appended.duplicate
    stored = await store.read("t1")
    assert [s.id for s in stored][1:] == appended.ids
    assert [getattr(s.event, "content", None) for s in stored] == [None, "a", "b"]
    assert [s.id for s in await store.read("t1", after=appended.ids[0])] == appended.ids[1:]


async def test_entries_are_flat_and_readable(store: EventStore) -> None:
    await new_thread(store)
    await store.append(Append("t1", [ev.RunCompleted(run_id="t1.abcdef")]))
    raw = await store.redis.xrange(store.stream_key("t1"))
    fields = raw[-1][1]
    assert fields["type"] == "run.completed"
    assert fields["run"] == "t1.abcdef"
    assert fields["v"] == "1" and fields["body"] == "{}"


async def test_creating_an_existing_thread_is_refused(store: EventStore) -> None:
    await new_thread(store)
    with pytest.raises(errors.ThreadExists):
        await new_thread(store)
    assert await store.version("t1") == 1


async def test_appending_to_a_missing_thread_writes_nothing(store: EventStore) -> None:
    with pytest.raises(errors.ThreadNotFound):
        await store.append(Append("nope", [message()]))
    assert not await store.exists("nope")
    assert await store.redis.xlen(store.keys.partition("nope").feed) == 0


async def test_expected_version_conflict_writes_nothing(store: EventStore) -> None:
    await new_thread(store)
    await store.append(Append("t1", [message()], expected_version=1))
    with pytest.raises(errors.VersionConflict) as caught:
        await store.append(Append("t1", [message()], expected_version=1))
    assert caught.value.actual == 2
    assert await store.version("t1") == 2


async def test_same_batch_twice_is_written_once(store: EventStore) -> None:
    await new_thread(store)
    batch = [message()]
    first = await store.append(Append("t1", batch, dedupe=True))
    again = await store.append(Append("t1", batch, dedupe=True))
    assert again.duplicate and again.ids == first.ids
    assert await store.version("t1") == 2


async def run_with_token(store: EventStore, run_id: str = "t1.aaaaaa") -> str:
    await new_thread(store)
    await store.append(
        Append("t1", [message()], run_id=run_id, run_fields={"status": "running", "token": "2"})
    )
    return run_id


async def test_stale_fencing_token_is_refused(store: EventStore) -> None:
    run_id = await run_with_token(store)
    delta = ev.MessageDelta(run_id=run_id, message_id="r", seq=1, text="x")
    await store.append(Append("t1", [delta], run_id=run_id, fence=2))
    with pytest.raises(errors.StaleFence):
        await store.append(Append("t1", [delta], run_id=run_id, fence=1))
    assert await store.version("t1") == 3


async def test_retried_fenced_batch_is_a_no_op(store: EventStore) -> None:
    run_id = await run_with_token(store)
    delta = ev.MessageDelta(run_id=run_id, message_id="r", seq=1, text="x")
    request = Append("t1", [delta], run_id=run_id, fence=2, batch_id=delta.event_id)
    first = await store.append(request)
    again = await store.append(request)
    assert again.duplicate and again.ids == first.ids
    assert await store.version("t1") == 3


async def test_cancelled_run_refuses_guarded_writes_only(store: EventStore) -> None:
    run_id = await run_with_token(store)
    await store.redis.hset(store.keys.partition("t1").run(run_id), "cancel", "1")
    delta = ev.MessageDelta(run_id=run_id, message_id="r", seq=1, text="x")
    with pytest.raises(errors.RunCancelled):
        await store.append(Append("t1", [delta], run_id=run_id, fence=2, refuse_if_cancelled=True))
    await store.append(Append("t1", [ev.RunCancelled(run_id=run_id)], run_id=run_id, fence=2))
    assert [s.event.type for s in await store.read("t1")][-1] == "run.cancelled"


async def test_feed_carries_thread_and_position(store: EventStore) -> None:
    await new_thread(store)
    appended = await store.append(Append("t1", [message()]))
    feed = await store.redis.xrange(store.keys.partition("t1").feed)
    assert [(f["thread"], f["tid"]) for _, f in feed][-1] == ("t1", appended.ids[0])


async def test_work_item_is_queued_and_acked_through_the_script(store: EventStore) -> None:
    await new_thread(store)
    part = store.keys.partition("t1")
    await store.redis.xgroup_create(part.work, WORKERS_GROUP, id="0", mkstream=True)
    await store.append(
        Append(
            "t1",
            [message()],
            run_id="t1.bbbbbb",
            run_fields={"status": "queued", "token": "1"},
            work=True,
        )
    )
    reply = await store.redis.xreadgroup(WORKERS_GROUP, "w", {part.work: ">"})
    entry_id, fields = reply[0][1][0]
    assert fields == {"run": "t1.bbbbbb", "thread": "t1"}
    await store.append(
        Append(
            "t1", [ev.RunCompleted(run_id="t1.bbbbbb")], run_id="t1.bbbbbb", fence=1, ack=entry_id
        )
    )
    assert await store.redis.xpending(part.work, WORKERS_GROUP) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }
    assert await store.redis.xlen(part.work) == 0


async def test_malformed_entries_are_reported_not_dropped(store: EventStore) -> None:
    await new_thread(store)
    key = store.stream_key("t1")
    bad_json = await store.redis.xadd(key, {"type": "message.sent", "v": "1", "body": "{nope"})
    unknown = await store.redis.xadd(key, {"type": "mystery", "v": "1", "body": "{}"})
    stored = await store.read("t1")
    problems = [s.event for s in stored if isinstance(s.event, Unreadable)]
    assert [(p.stream, p.id) for p in problems] == [(key, bad_json), (key, unknown)]
    assert "JSON" in problems[0].reason
    assert "mystery" in problems[1].reason


async def test_a_resend_gets_back_the_reply_kept_with_its_dedupe_key(store: EventStore) -> None:
    await new_thread(store)
    first = await store.append(
        Append("t1", [message()], dedupe=True, dedupe_key="client-1", reply='{"was":"x"}')
    )
    again = await store.append(
        Append("t1", [message()], dedupe=True, dedupe_key="client-1", reply='{"was":"y"}')
    )
    assert (first.duplicate, first.reply) == (False, '{"was":"x"}')
    assert (again.duplicate, again.reply, again.ids) == (True, '{"was":"x"}', first.ids)
    assert await store.version("t1") == 2
    assert await store.recall("t1", "client-1") == '{"was":"x"}'
    ttl = await store.redis.pttl(store.keys.partition("t1").dedupe("client-1"))
    assert 0 < ttl <= store.dedupe_window_ms


async def test_a_holder_whose_run_is_gone_does_not_block_its_thread(store: EventStore) -> None:
    await new_thread(store)
    part = store.keys.partition("t1")
    # Its run hash never was, or expired.
    await store.redis.hset(part.active, "t1:assistant", "t1.ghost0")
    await store.append(
        Append(
            "t1",
            [message()],
            run_id="t1.cccccc",
            run_fields={"status": "queued", "agent": "assistant"},
            work=True,
        )
    )
    assert await store.redis.hget(part.active, "t1:assistant") == "t1.cccccc"
    assert await store.redis.xlen(part.work) == 1
    assert not await store.redis.exists(part.run("t1.ghost0"))
