"""The projector stores views with their checkpoint and folds each event once."""

from __future__ import annotations

import asyncio

from consumers.llm.scripted import ScriptedLLM, scripted_reply
from consumers.worker import Worker
from projections.projector import Projector
from projections.thread_view import ThreadView, fold
from projections.views import ViewStore
from service import commands
from slipstream.config import Settings
from slipstream.keys import PROJECTORS_GROUP
from slipstream.store import EventStore
from tests.waits import next_millisecond


async def answered_thread(store: EventStore, settings: Settings, text: str) -> str:
    thread_id, _ = await commands.create_thread(store)
    await commands.send_message(store, thread_id, text, "assistant")
    await Worker(store.backend, store, ScriptedLLM(words=30, delay_ms=0), settings).run_once()
    return thread_id


async def test_views_are_stored_with_their_checkpoint(
    store: EventStore, settings: Settings
) -> None:
    thread_id = await answered_thread(store, settings, "project me")
    projector = Projector(store.backend, store, "p1")
    assert await projector.run_once() > 0

    stored = await ViewStore(store).load(thread_id)
    assert stored is not None
    events = await store.read(thread_id)
    assert stored.last_event_id == events[-1].id and stored.version == len(events)
    assert stored.messages[-1].content == scripted_reply("project me", 30)
    part = store.keys.partition(thread_id)
    assert await store.redis.hget(part.view(thread_id), "last") == events[-1].id
    assert await projector.run_once() == 0  # nothing new: nothing folded


async def test_a_view_rebuilt_from_the_stream_equals_the_stored_one(
    store: EventStore, settings: Settings
) -> None:
    thread_id = await answered_thread(store, settings, "rebuild me")
    await Projector(store.backend, store, "p1").run_once()
    stored = await ViewStore(store).load(thread_id)
    rebuilt = fold(
        ThreadView.empty(thread_id, store.stream_key(thread_id)), await store.read(thread_id)
    )
    assert stored == rebuilt


async def test_feed_entries_seen_twice_fold_once(store: EventStore, settings: Settings) -> None:
    thread_id = await answered_thread(store, settings, "twice")
    first = Projector(store.backend, store, "p1")
    await first.run_once()
    before = await ViewStore(store).load(thread_id)

    # Rewind the group: a second projector gets the whole feed again, as after a crash.
    part = store.keys.partition(thread_id)
    await store.redis.xgroup_setid(part.feed, PROJECTORS_GROUP, "0")
    again = Projector(store.backend, store, "p2")
    assert await again.run_once() > 0
    assert again.stats["folded"] == 0
    assert await ViewStore(store).load(thread_id) == before


async def test_two_projectors_at_once_agree(store: EventStore, settings: Settings) -> None:
    threads = [await answered_thread(store, settings, f"q{i}") for i in range(4)]
    one, two = Projector(store.backend, store, "p1"), Projector(store.backend, store, "p2")
    await asyncio.gather(one.run_once(), two.run_once())
    for i, thread_id in enumerate(threads):
        view = await ViewStore(store).load(thread_id)
        assert view is not None and view.messages[-1].content == scripted_reply(f"q{i}", 30)
        assert view.version == len(await store.read(thread_id))


async def test_pending_entries_of_a_dead_projector_are_recovered(
    store: EventStore, settings: Settings
) -> None:
    thread_id = await answered_thread(store, settings, "orphan")
    part = store.keys.partition(thread_id)
    dead = Projector(store.backend, store, "dead", claim_idle_ms=0)
    await dead.setup()
    # The dead projector read the feed and died before folding or acking.
    await store.redis.xreadgroup(PROJECTORS_GROUP, "dead", {part.feed: ">"})
    heir = Projector(store.backend, store, "heir", claim_idle_ms=0)
    await heir.run_once()
    view = await ViewStore(store).load(thread_id)
    assert view is not None and view.messages[-1].content == scripted_reply("orphan", 30)
    assert (await store.redis.xpending(part.feed, PROJECTORS_GROUP))["pending"] == 0


async def test_summaries_follow_last_activity(store: EventStore, settings: Settings) -> None:
    old = await answered_thread(store, settings, "old")
    await next_millisecond(store, old)
    new = await answered_thread(store, settings, "new")
    await Projector(store.backend, store, "p1").run_once()
    summaries = await ViewStore(store).summaries(10)
    assert [s.id for s in summaries] == [new, old]
    assert [s.title for s in summaries] == ["new", "old"]
    assert summaries[0].messages == 2 and summaries[0].active_run is None
