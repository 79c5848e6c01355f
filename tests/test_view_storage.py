"""Stored views: one event writes only what it changed; unusable views are rebuilt."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from consumers.llm.scripted import scripted_reply
from projections import thread_view
from projections.projector import Projector
from projections.thread_view import ThreadView, fold
from projections.views import ViewStore
from service import commands
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import new_id, new_run_id
from slipstream.store import Append, EventStore
from tests.harness import System, running_system


def exchange(run_id: str) -> list[ev.Event]:
    message_id, reply_id = new_id("m"), new_id("m")
    text = "An answer of a few words. " * 10
    return [
        ev.MessageSent(message_id=message_id, content="A question?", agent="assistant"),
        ev.RunRequested(run_id=run_id, message_id=message_id, reply_id=reply_id, agent="assistant"),
        ev.RunStarted(run_id=run_id, attempt=1, worker="w:1:a", token=1),
        ev.MessageCompleted(run_id=run_id, message_id=reply_id, text=text),
        ev.RunCompleted(run_id=run_id),
    ]


async def thread_of(store: EventStore, messages: int) -> str:
    thread_id, _ = await commands.create_thread(store, "long")
    for _ in range(messages // 2):
        await store.append(Append(thread_id, exchange(new_run_id(thread_id))))
    return thread_id


async def rebuilt(store: EventStore, thread_id: str) -> ThreadView:
    return fold(
        ThreadView.empty(thread_id, store.stream_key(thread_id)), await store.read(thread_id)
    )


class CountingScript:
    """Stands in for the save script and counts the bytes each call sends."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.sent: list[int] = []

    async def __call__(self, *, keys: list[str], args: list[str]) -> Any:
        self.sent.append(sum(len(str(part).encode()) for part in (*keys, *args)))
        return await self.script(keys=keys, args=args)


async def bytes_per_delta(store: EventStore, messages: int, deltas: int = 20) -> list[int]:
    thread_id = await thread_of(store, messages)
    projector = Projector(store.backend, store, f"p{messages}")
    run_id = new_run_id(thread_id)
    opening = exchange(run_id)[:3]
    await store.append(Append(thread_id, opening))
    await projector.project_thread(thread_id)
    counting = CountingScript(projector.views._store)
    projector.views._store = counting  # type: ignore[assignment]
    assert isinstance(opening[1], ev.RunRequested)
    for seq in range(1, deltas + 1):
        delta = ev.MessageDelta(
            run_id=run_id, message_id=opening[1].reply_id, seq=seq, text="word "
        )
        await store.append(Append(thread_id, [delta]))
        assert await projector.project_thread(thread_id) is not None
    assert await ViewStore(store).load(thread_id) == await rebuilt(store, thread_id)
    return counting.sent


async def test_bytes_written_per_delta_do_not_grow_with_the_thread(store: EventStore) -> None:
    short = await bytes_per_delta(store, 10)
    long = await bytes_per_delta(store, 1000)
    assert len(short) == len(long) == 20  # one save per delta
    # Position numbers and counts have a few more digits; the view itself is not rewritten.
    for small, large in zip(short, long, strict=True):
        assert large - small <= 16, (small, large)
    first, *later = long
    assert first < 2304  # the message and its run, which notes when it first wrote
    assert max(later) < 1536  # the message alone: a later delta leaves the run as it was


async def test_a_cached_view_is_not_read_again(store: EventStore, settings: Settings) -> None:
    thread_id = await thread_of(store, 10)
    projector = Projector(store.backend, store, "p1")
    await projector.project_thread(thread_id)
    reads = 0
    read = projector.views.read

    async def counted(thread: str) -> Any:
        nonlocal reads
        reads += 1
        return await read(thread)

    projector.views.read = counted  # type: ignore[method-assign]
    await store.append(Append(thread_id, [ev.ThreadRenamed(title="again")]))
    view = await projector.project_thread(thread_id)
    assert view is not None and view.title == "again" and reads == 0
    # Another writer moved the stored view on: the save is refused and the view read again.
    await store.append(Append(thread_id, [ev.ThreadRenamed(title="elsewhere")]))
    await Projector(store.backend, store, "p2").project_thread(thread_id)
    await store.append(Append(thread_id, [ev.ThreadRenamed(title="last")]))
    view = await projector.project_thread(thread_id)
    assert view is not None and view.title == "last" and reads == 1
    assert projector.stats["conflicts"] == 1
    assert await ViewStore(store).load(thread_id) == await rebuilt(store, thread_id)


async def old_schema(store: EventStore, thread_id: str) -> None:
    """The layout before schema 2: the whole view as one JSON field."""
    key = store.keys.partition(thread_id).view(thread_id)
    view = await rebuilt(store, thread_id)
    await store.redis.delete(key)
    await store.redis.hset(
        key, mapping={"last": view.last_event_id or "", "view": view.model_dump_json()}
    )


async def corrupt_message(store: EventStore, thread_id: str) -> None:
    await store.redis.hset(store.keys.partition(thread_id).view(thread_id), "m:1", "{not json")


async def rejected_run(store: EventStore, thread_id: str) -> None:
    await store.redis.hset(
        store.keys.partition(thread_id).view(thread_id), "r:0", '{"id": "x", "status": "lost"}'
    )


async def other_schema(store: EventStore, thread_id: str) -> None:
    await store.redis.hset(store.keys.partition(thread_id).view(thread_id), "schema", "999")


async def corrupt_meta(store: EventStore, thread_id: str) -> None:
    await store.redis.hset(store.keys.partition(thread_id).view(thread_id), "meta", "[]")


async def misnumbered(store: EventStore, thread_id: str) -> None:
    key = store.keys.partition(thread_id).view(thread_id)
    await store.redis.hset(key, mapping={"m:x": "{}", "m:99": "{}"})


SPOILERS = [old_schema, corrupt_message, rejected_run, other_schema, corrupt_meta, misnumbered]


@pytest.mark.parametrize("spoil", SPOILERS, ids=lambda f: f.__name__)
async def test_an_unusable_view_is_rebuilt_by_readers_and_the_projector(
    store: EventStore, caplog: pytest.LogCaptureFixture, spoil: Any
) -> None:
    thread_id = await thread_of(store, 6)
    await Projector(store.backend, store, "p1").project_thread(thread_id)
    truth = await rebuilt(store, thread_id)

    await spoil(store, thread_id)
    with caplog.at_level(logging.WARNING, "slipstream.views"):
        assert await ViewStore(store).current(thread_id) == truth
    assert [r.levelname for r in caplog.records] == ["WARNING"]  # one line per rebuild
    assert await ViewStore(store).load(thread_id) == truth  # overwritten: usable again

    await spoil(store, thread_id)
    await store.append(Append(thread_id, [ev.ThreadRenamed(title="after")]))
    projector = Projector(store.backend, store, "p2")
    assert await projector.run_once() > 0
    assert await ViewStore(store).load(thread_id) == await rebuilt(store, thread_id)


async def test_the_projector_survives_events_that_do_not_fold(
    store: EventStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    thread_id = await thread_of(store, 4)
    projector = Projector(store.backend, store, "p1")
    assert await projector.run_once() > 0

    def broken(view: ThreadView, event: ev.Event, entry_id: str) -> None:
        raise RuntimeError("a fold bug")

    monkeypatch.setitem(thread_view._HANDLERS, "thread.renamed", broken)
    await store.append(Append(thread_id, [ev.ThreadRenamed(title="boom")]))
    with caplog.at_level(logging.WARNING):
        assert await projector.run_once() == 1  # the entry is handled, not retried for ever
    assert projector.stats["unfoldable"] == 1
    stored = await ViewStore(store).load(thread_id)
    assert stored is not None and stored.title == "long"  # left as it was

    monkeypatch.undo()
    await store.append(Append(thread_id, [ev.ThreadRenamed(title="fixed")]))
    await projector.run_once()
    assert await ViewStore(store).load(thread_id) == await rebuilt(store, thread_id)


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, settings) as running:
        yield running


@pytest.mark.parametrize("spoil", SPOILERS, ids=lambda f: f.__name__)
async def test_get_and_the_snapshot_show_the_right_view_of_an_unusable_one(
    system: System, spoil: Any
) -> None:
    thread_id = await system.new_thread()
    accepted = await system.send(thread_id, "spoil me")
    await system.wait_for_run(thread_id, accepted["run_id"])
    store = system.runtime.store
    truth = (await rebuilt(store, thread_id)).model_dump(mode="json")
    assert truth["messages"][1]["content"] == scripted_reply("spoil me", 40)

    await spoil(store, thread_id)
    assert await system.view(thread_id) == truth
    await spoil(store, thread_id)
    async with connect(system.ws_url(thread_id)) as socket:
        snapshot = orjson.loads(await socket.recv())
    assert snapshot["view"] == truth and snapshot["last_event_id"] == truth["last_event_id"]


async def test_the_list_takes_the_projected_summary_once_it_has_the_change(
    store: EventStore,
) -> None:
    thread_id = await thread_of(store, 4)
    await Projector(store.backend, store, "p1").project_thread(thread_id)
    part = store.keys.partition(thread_id)
    projected = (await ViewStore(store).current(thread_id)).summary()
    planted = projected.model_copy(update={"title": "as projected"})
    await store.redis.hset(part.summaries, thread_id, planted.model_dump_json())
    views = ViewStore(store)
    assert await views.summary(thread_id, at_least=projected.last_event_id) == planted

    renamed = await store.append(Append(thread_id, [ev.ThreadRenamed(title="renamed")]))
    behind = await views.summary(thread_id, at_least=renamed.ids[-1])  # not projected yet
    assert (behind.title, behind.last_event_id) == ("renamed", renamed.ids[-1])
    await store.redis.hset(part.summaries, thread_id, "{garbled")
    assert (await views.summary(thread_id)).title == "renamed"


async def test_the_stored_summary_names_the_same_active_run_as_the_fold(
    store: EventStore,
) -> None:
    thread_id = await thread_of(store, 4)
    projector = Projector(store.backend, store, "p1")
    first, second = new_run_id(thread_id), new_run_id(thread_id)
    steps: list[list[ev.Event]] = [
        exchange(first)[:2],  # queued
        exchange(second)[:2],  # two queued: the first is active
        [ev.RunStarted(run_id=second, attempt=1, worker="w", token=1)],  # running beats queued
        [ev.RunFailed(run_id=second, reason="no")],
        [ev.RunCancelled(run_id=first)],  # nothing active
        [ev.RunRestarted(run_id=second)],  # queued again, at its old place
    ]
    part = store.keys.partition(thread_id)
    actives = []
    for events in steps:
        await store.append(Append(thread_id, events))
        await projector.project_thread(thread_id)
        raw = await store.redis.hget(part.summaries, thread_id)
        expected = (await rebuilt(store, thread_id)).summary()
        assert raw == expected.model_dump_json()
        actives.append(expected.active_run)
    assert actives == [first, first, second, first, None, second]


async def test_the_stored_view_ends_the_message_of_the_agent_handed_to(store: EventStore) -> None:
    thread_id = await thread_of(store, 4)  # messages before the run's, so positions matter
    run_id = new_run_id(thread_id)
    opening = exchange(run_id)[:3]
    assert isinstance(opening[1], ev.RunRequested)
    handed_to = "m" + "1" * 16
    projector = Projector(store.backend, store, "p-handoff")
    for events in (
        opening,
        [
            ev.MessageCompleted(run_id=run_id, message_id=opening[1].reply_id, text=""),
            ev.AgentHandoff(run_id=run_id, from_agent="writer", to_agent="critic", reason="r"),
        ],
        [ev.MessageDelta(run_id=run_id, message_id=handed_to, seq=1, text="So. ", agent="critic")],
        [ev.RunCancelled(run_id=run_id, reason="cancelled by request")],
    ):
        await store.append(Append(thread_id, events))
        assert await projector.project_thread(thread_id) is not None  # one save per append
    loaded = await ViewStore(store).load(thread_id)
    assert loaded is not None and loaded == await rebuilt(store, thread_id)
    assert [(m.agent, m.status) for m in loaded.messages if m.run_id == run_id][-2:] == [
        ("assistant", "completed"),
        ("critic", "cancelled"),
    ]
