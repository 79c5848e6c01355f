"""The projector folds the threads of a partition together, and a busy one folds in batches."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from projections.projector import Projector
from projections.thread_view import ThreadView, fold
from projections.views import ViewStore
from service import commands
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace, Partition, new_id, new_run_id
from slipstream.store import Append, EventStore
from tests.waits import until


async def threads_in(store: EventStore, part: Partition, count: int) -> list[str]:
    """`count` new threads of the given partition."""
    found: list[str] = []
    while len(found) < count:
        thread_id, _ = await commands.create_thread(store, f"t{len(found)}")
        if store.keys.partition(thread_id).number == part.number:
            found.append(thread_id)
    return found


async def stream_deltas(store: EventStore, threads: list[str], deltas: int) -> None:
    """Each thread gets an answer of `deltas` deltas, appended one by one."""
    runs = {t: (new_run_id(t), new_id("m")) for t in threads}
    for seq in range(1, deltas + 1):
        for thread_id, (run_id, message_id) in runs.items():
            delta = ev.MessageDelta(run_id=run_id, message_id=message_id, seq=seq, text=f"w{seq} ")
            await store.append(Append(thread_id, [delta]))


async def rebuilt(store: EventStore, thread_id: str) -> ThreadView:
    return fold(
        ThreadView.empty(thread_id, store.stream_key(thread_id)), await store.read(thread_id)
    )


async def all_folded(store: EventStore, threads: list[str]) -> bool:
    views = ViewStore(store)
    for thread_id in threads:
        if await views.load(thread_id) != await rebuilt(store, thread_id):
            return False
    return True


def count_pipelines(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The key of each pipeline the backend opens from now on."""
    opened: list[str] = []
    pipeline_for = backend.pipeline_for

    @asynccontextmanager
    async def counted(key: str, **kwargs: Any) -> AsyncIterator[Any]:
        opened.append(key)
        async with pipeline_for(key, **kwargs) as pipe:
            yield pipe

    monkeypatch.setattr(backend, "pipeline_for", counted)
    return opened


def one_by_one_fails(projector: Projector, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ways of folding a single thread raise: a batch must not need them."""

    async def unused(*args: object, **kwargs: object) -> Any:
        raise AssertionError("a thread of the batch was folded on its own")

    for name in ("read", "advance", "save"):
        monkeypatch.setattr(projector.views, name, unused)


@pytest.fixture
def served_store(served_backend: Backend, settings: Settings) -> EventStore:
    """On one Redis and on a cluster: a batch's pipelines go to its partition's node."""
    return EventStore(served_backend, Keyspace(settings.partitions))


def partition_pipelines(opened: list[str], store: EventStore) -> list[str]:
    """Those not of the look-and-read of the feeds (one MULTI, or one per partition)."""
    feeds = {part.feed for part in store.keys.all()}
    return [key for key in opened if key not in feeds]


@pytest.mark.parametrize("count", [2, 12])
async def test_the_threads_of_a_partition_fold_in_the_same_round_trips_however_many(
    served_store: EventStore, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    store = served_store
    part = store.keys.all()[0]
    threads = await threads_in(store, part, count)
    projector = Projector(store.backend, store, "p1")
    await projector.run_once()
    await stream_deltas(store, threads, 3)
    await store.append(Append(threads[0], [ev.ThreadRenamed(title="renamed")]))
    one_by_one_fails(projector, monkeypatch)
    opened = count_pipelines(store.backend, monkeypatch)

    assert await projector.run_once() == count * 3 + 1
    # The threads' events and their saves, one round trip each: the views are cached
    # from the first pass, so nothing reads them.
    assert partition_pipelines(opened, store) == [part.thread(threads[0]), part.view(threads[0])]
    assert await all_folded(store, threads)
    assert projector.stats["conflicts"] == 0


async def test_views_not_cached_are_read_in_one_multi(
    served_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = served_store
    part = store.keys.all()[0]
    threads = await threads_in(store, part, 5)
    await Projector(store.backend, store, "p0").run_once()
    await stream_deltas(store, threads, 2)
    fresh = Projector(store.backend, store, "p1")  # a cache of its own: empty
    one_by_one_fails(fresh, monkeypatch)
    opened = count_pipelines(store.backend, monkeypatch)

    await fresh.run_once()
    view, events = part.view(threads[0]), part.thread(threads[0])
    assert partition_pipelines(opened, store) == [view, events, view]
    assert await all_folded(store, threads)


async def test_a_save_refused_in_a_batch_folds_that_thread_again_alone(
    store: EventStore,
) -> None:
    part = store.keys.all()[0]
    threads = await threads_in(store, part, 4)
    projector = Projector(store.backend, store, "p1")
    await projector.run_once()  # its cache holds every view
    moved = threads[1]
    await stream_deltas(store, [moved], 2)
    await Projector(store.backend, store, "p2").project_thread(moved)  # moves it on
    await stream_deltas(store, threads, 2)

    await projector.run_once()
    assert projector.stats["conflicts"] == 1  # the cached view of `moved` was stale
    assert await all_folded(store, threads)


async def test_a_batch_save_the_server_lacks_the_script_for_loads_it(
    served_store: EventStore,
) -> None:
    store = served_store
    part = store.keys.all()[0]
    threads = await threads_in(store, part, 3)
    projector = Projector(store.backend, store, "p1")
    await projector.run_once()
    await stream_deltas(store, threads, 2)
    await store.redis.script_flush()  # a restarted Redis: no script loaded

    await projector.run_once()
    assert await all_folded(store, threads)


async def test_a_busy_projector_starts_a_pass_at_most_every_fold_every_s(
    store: EventStore,
) -> None:
    part = store.keys.all()[0]
    threads = await threads_in(store, part, 2)
    projector = Projector(store.backend, store, "p1", fold_every_s=0.3, busy_pass=1)
    starts: list[float] = []
    step = projector._step

    async def noted(*args: Any, **kwargs: Any) -> int:
        started = time.monotonic()
        handled = await step(*args, **kwargs)
        if handled:
            starts.append(started)
        return handled

    projector._step = noted  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        await until(lambda: all_folded(store, threads))
        starts.clear()
        began = time.monotonic()
        await stream_deltas(store, threads, 30)  # each delta its own append
        streamed = time.monotonic() - began
        await until(lambda: all_folded(store, threads))
    finally:
        stop.set()
        await task
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.3 for gap in gaps), gaps
    assert len(starts) <= streamed / 0.3 + 2, (len(starts), streamed)


async def resting_projector(
    store: EventStore, monkeypatch: pytest.MonkeyPatch, *, busy_pass: int
) -> tuple[Projector, list[float]]:
    """A projector over a new thread "t", and the rests it takes (noted, not slept)."""
    await commands.create_thread(store, "t")
    projector = Projector(store.backend, store, "p1", fold_every_s=0.05, busy_pass=busy_pass)
    await projector.setup()
    rests: list[float] = []

    async def rest(seconds: float) -> None:
        rests.append(seconds)

    monkeypatch.setattr(projector, "_rest", rest)
    return projector, rests


async def test_the_rest_follows_a_pass_that_folded_and_lasts_at_least_as_long(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    projector, rests = await resting_projector(store, monkeypatch, busy_pass=1)
    advance_many = projector._advance_many

    async def slow(*args: Any) -> Any:
        await asyncio.sleep(0.2)  # a pass that takes long: the scenario, not a wait
        return await advance_many(*args)

    monkeypatch.setattr(projector, "_advance_many", slow)
    await projector._fold_pass()  # folds the thread's creation, in 0.2 s or more
    assert len(rests) == 1 and rests[0] >= 0.2
    await projector._fold_pass()  # nothing new: no rest after it
    assert len(rests) == 1


async def test_a_pass_that_folded_little_rests_not_so_lists_show_what_just_ended(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    projector, rests = await resting_projector(store, monkeypatch, busy_pass=2)
    await projector._fold_pass()  # one entry (the thread's creation): under busy_pass
    assert rests == []
    await commands.create_thread(store, "u")
    await commands.create_thread(store, "v")
    await projector._fold_pass()  # two: a busy pass
    assert len(rests) == 1
