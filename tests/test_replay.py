"""Replay: a thread's stored views rebuilt from its stream and compared."""

from __future__ import annotations

import pytest

from projections import replay as replay_module
from projections.projector import Projector
from projections.replay import replay
from projections.thread_view import Changes, ThreadView, fold_into
from projections.views import ViewStore
from service import commands
from slipstream import errors
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace, new_run_id
from slipstream.store import Append, Appended, EventStore, Stored
from tests.test_view_storage import exchange


async def projected_thread(store: EventStore) -> tuple[str, Projector]:
    thread_id, _ = await commands.create_thread(store, "replayed")
    for _ in range(2):
        await store.append(Append(thread_id, exchange(new_run_id(thread_id))))
    projector = Projector(store.backend, store, "replay-test")
    await projector.project_thread(thread_id)
    return thread_id, projector


async def test_a_projected_thread_replays_the_same(store: EventStore) -> None:
    thread_id, _ = await projected_thread(store)
    replayed = await replay(store, thread_id)
    assert replayed.same, replayed.differences
    assert replayed.events == len(await store.read(thread_id))


async def test_a_view_behind_its_stream_is_compared_where_it_stands(store: EventStore) -> None:
    thread_id, _ = await projected_thread(store)
    folded = (await replay(store, thread_id)).last
    await store.append(Append(thread_id, exchange(new_run_id(thread_id))))  # not projected
    replayed = await replay(store, thread_id)
    assert replayed.same, replayed.differences
    assert replayed.last == folded


async def test_a_tampered_view_is_a_difference(store: EventStore) -> None:
    thread_id, _ = await projected_thread(store)
    part = store.keys.partition(thread_id)
    original = await store.redis.hget(part.view(thread_id), "m:1")
    await store.redis.hset(part.view(thread_id), "m:1", original.replace("answer", "ANSWER"))
    await store.redis.hdel(part.view(thread_id), "r:1")
    replayed = await replay(store, thread_id)
    assert [(d.where, d.field) for d in replayed.differences] == [("view", "m:1"), ("view", "r:1")]
    assert replayed.differences[0].rebuilt == original
    assert replayed.differences[1].stored is None


async def test_an_unprojected_thread_differs_by_its_missing_view(store: EventStore) -> None:
    thread_id, _ = await commands.create_thread(store, "never projected")
    replayed = await replay(store, thread_id)
    assert [(d.where, d.field, d.stored) for d in replayed.differences] == [("view", "last", None)]


async def test_an_unknown_thread_is_not_found(store: EventStore) -> None:
    with pytest.raises(errors.ThreadNotFound):
        await replay(store, "tnothere")


async def test_a_long_thread_saves_its_rebuilt_view_and_replays_the_same(
    real_backend: Backend, settings: Settings
) -> None:
    # 1,400 exchanges: a view of 4,200 fields, past the ~8,000 values Lua's unpack() takes.
    store = EventStore(real_backend, Keyspace(settings.partitions))
    thread_id, _ = await commands.create_thread(store, "long")
    for _ in range(14):
        batch = [Append(thread_id, exchange(new_run_id(thread_id))) for _ in range(100)]
        assert all(isinstance(r, Appended) for r in await store.append_many(batch))
    assert await ViewStore(store).reindex(thread_id)
    replayed = await replay(store, thread_id)
    assert replayed.same, replayed.differences[:2]
    assert await store.redis.hlen(store.keys.partition(thread_id).view(thread_id)) == 4_203


async def test_a_long_thread_is_folded_a_page_at_a_time(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay holds one page of the stream at a time, not the whole thread."""
    thread_id, _ = await projected_thread(store)
    monkeypatch.setattr(store, "read_page", 3)
    folded: list[int] = []

    def fold_counted(view: ThreadView, stored: list[Stored]) -> Changes:
        folded.append(len(stored))
        return fold_into(view, stored)

    monkeypatch.setattr(replay_module, "fold_into", fold_counted)
    replayed = await replay(store, thread_id)
    assert replayed.same, replayed.differences
    assert sum(folded) == len(await store.read(thread_id)) > 3
    assert max(folded) == 3
