"""The projector under faults: trimmed feeds, long threads, threads that fail, long passes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from projections import projector as projector_module
from projections.projector import FOLD_LOOP, Projector
from projections.views import Snapshot, ViewStore
from service import commands
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import PROJECTORS_GROUP, Keyspace, Partition
from slipstream.store import EventStore
from slipstream.supervise import Liveness
from tests.waits import until


async def thread_in(store: EventStore, part: Partition, title: str) -> str:
    """A new thread of the given partition."""
    while True:
        thread_id, _ = await commands.create_thread(store, title)
        if store.keys.partition(thread_id).number == part.number:
            return thread_id


async def trim_past(store: EventStore, part: Partition, events: int) -> str:
    """Enough later events in the partition to trim its feed (MAXLEN ~ drops whole nodes)."""
    other = await thread_in(store, part, "other")
    for i in range(events):
        await commands.update_thread(store, other, title=f"other {i}")
    return other


async def feed_threads(store: EventStore, part: Partition) -> set[str]:
    return {f.get("thread", "") for _, f in await store.redis.xrange(part.feed)}


def folded(store: EventStore, titles: dict[str, str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return all([await view_title(store, t) == title for t, title in titles.items()])

    return check


async def view_title(store: EventStore, thread_id: str) -> str | None:
    view = await ViewStore(store).load(thread_id)
    return None if view is None else view.title


async def test_a_feed_trimmed_past_a_stopped_projector_is_noticed(
    real_backend: Backend, settings: Settings
) -> None:
    # Real Redis: it is its XTRIM that drops the entries.
    store = EventStore(real_backend, Keyspace(settings.partitions), feed_maxlen=10)
    projector = Projector(real_backend, store, "p1")
    await projector.setup()
    part = store.keys.partition((await commands.create_thread(store, "first"))[0])
    for rounds in range(1, 4):  # stopped, trimmed, started again: each time
        lost = await thread_in(store, part, f"lost {rounds}")
        other = await trim_past(store, part, 300)
        assert lost not in await feed_threads(store, part)  # trimmed before it was folded

        stop = asyncio.Event()
        task = asyncio.create_task(projector.run(stop))
        try:
            await until(folded(store, {lost: f"lost {rounds}", other: "other 299"}))
        finally:
            stop.set()
            await task
        assert projector.stats["gaps"] == rounds


async def test_a_feed_trimmed_while_a_batch_is_folded_is_noticed(
    real_backend: Backend, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EventStore(real_backend, Keyspace(settings.partitions), feed_maxlen=10)
    projector = Projector(real_backend, store, "p1")
    slow, _ = await commands.create_thread(store, "slow")
    part = store.keys.partition(slow)
    held, release = asyncio.Event(), asyncio.Event()
    advance_many = projector.views.advance_many

    async def held_once(part: Partition, snapshots: list[Snapshot]) -> Any:
        for snapshot in snapshots:
            if snapshot.view.id == slow and snapshot.view.title == "slow" and not release.is_set():
                held.set()  # the fold of this batch takes a while
                await release.wait()
        return await advance_many(part, snapshots)

    monkeypatch.setattr(projector.views, "advance_many", held_once)
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        await until(folded(store, {slow: "slow"}))
        await commands.update_thread(store, slow, title="slower")
        async with asyncio.timeout(10):
            await held.wait()
        lost = await thread_in(store, part, "lost")
        other = await trim_past(store, part, 300)
        assert lost not in await feed_threads(store, part)
        release.set()
        await until(folded(store, {lost: "lost", other: "other 299", slow: "slower"}))
    finally:
        release.set()
        stop.set()
        await task
    assert projector.stats["gaps"] == 1


async def test_a_gap_is_seen_once_and_trimmed_entries_already_read_are_none(
    real_backend: Backend, settings: Settings
) -> None:
    store = EventStore(real_backend, Keyspace(settings.partitions), feed_maxlen=10)
    projector = Projector(real_backend, store, "p1")
    first, _ = await commands.create_thread(store, "first")
    await projector.run_once()  # the group has read, and counts what it reads
    part = store.keys.partition(first)
    lost = await thread_in(store, part, "lost")
    await trim_past(store, part, 300)
    assert lost not in await feed_threads(store, part)
    await projector.run_once()
    assert await view_title(store, lost) == "lost"
    assert projector.stats["gaps"] == 1

    # Redis counted the read across the gap as if nothing was lost; put right,
    # a feed trimmed of entries already read is no gap.
    (group,) = await store.redis.xinfo_groups(part.feed)
    assert group["lag"] == 0
    await store.redis.xtrim(part.feed, maxlen=0, approximate=False)
    await projector.run_once()
    await thread_in(store, part, "after")
    await projector.run_once()
    assert projector.stats["gaps"] == 1


async def test_a_thread_longer_than_a_page_reads_whole_and_in_order(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = await commands.create_thread(store, "long")
    for i in range(30):
        await commands.update_thread(store, thread_id, title=f"t{i}")
    asked = count_xranges(store, monkeypatch)
    store.read_page = 7

    events = await store.read(thread_id)
    assert len(events) == 31 and [e.id for e in events] == sorted_ids(events)
    assert max(asked) <= 7 and len(asked) == 5  # 31 entries: 7+7+7+7+3
    assert [e.id for e in await store.read(thread_id, after=events[6].id)] == [
        e.id for e in events[7:]
    ]
    assert [e.id for e in await store.read(thread_id, start=events[14].id)] == [
        e.id for e in events[14:]
    ]
    asked.clear()
    assert len(await store.read(thread_id, count=10)) == 10 and asked == [10]


async def test_the_projector_rebuilds_a_thread_longer_than_a_page(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = await commands.create_thread(store, "long")
    for i in range(60):
        await commands.update_thread(store, thread_id, title=f"t{i}")
    projector = Projector(store.backend, store, "p1")
    await projector.run_once()
    # An unusable stored view is rebuilt from the whole stream.
    part = store.keys.partition(thread_id)
    await store.redis.hset(part.view(thread_id), "meta", "not json")
    asked = count_xranges(store, monkeypatch)
    store.read_page = 8
    view = await Projector(store.backend, store, "p2").project_thread(thread_id)
    assert view is not None and view.title == "t59" and view.version == 61
    assert max(asked) <= 8
    assert await view_title(store, thread_id) == "t59"


def count_xranges(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the COUNT of every XRANGE; one without a COUNT fails the test."""
    asked: list[int] = []
    xrange = store.redis.xrange

    async def counted(name: str, *args: Any, count: int | None = None, **kwargs: Any) -> Any:
        if ":thread:" in name:  # a thread stream: long ones must be read in pages
            assert count is not None, f"XRANGE of the whole of {name}"
            asked.append(count)
        return await xrange(name, *args, count=count, **kwargs)

    monkeypatch.setattr(store.redis, "xrange", counted)
    return asked


def sorted_ids(events: list[Any]) -> list[str]:
    return sorted((e.id for e in events), key=lambda i: tuple(int(p) for p in i.split("-")))


def break_view(store: EventStore, thread_id: str) -> Awaitable[Any]:
    """A view key of the wrong type: every fold of the thread fails with WRONGTYPE."""
    part = store.keys.partition(thread_id)
    return store.redis.set(part.view(thread_id), "not a hash")


async def pending(store: EventStore, part: Partition) -> int:
    return int((await store.redis.xpending(part.feed, PROJECTORS_GROUP))["pending"])


async def test_a_thread_that_fails_holds_up_no_other(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    bad, _ = await commands.create_thread(store, "bad")
    good = await thread_in(store, store.keys.partition(bad), "good")
    elsewhere = await other_partition_thread(store, bad)
    await break_view(store, bad)
    projector = Projector(store.backend, store, "p1", claim_idle_ms=0)
    with caplog.at_level(logging.ERROR, "slipstream.projector"):
        await projector.run_once()
        await projector.run_once()  # tried again, not logged again within the minute
    assert await view_title(store, good) == "good"
    assert await view_title(store, elsewhere) == "elsewhere"
    part = store.keys.partition(bad)
    assert await pending(store, part) == 1  # the bad thread's entry, and only it
    assert projector.stats["thread_errors"] == 2
    failed = [r for r in caplog.records if bad in r.getMessage()]
    assert len(failed) == 1 and "stay pending" in failed[0].getMessage()

    await store.redis.delete(part.view(bad))  # mended: the next takeover folds it
    await projector.run_once()
    assert await view_title(store, bad) == "bad" and await pending(store, part) == 0


async def other_partition_thread(store: EventStore, thread_id: str) -> str:
    number = store.keys.partition(thread_id).number
    while True:
        other, _ = await commands.create_thread(store, "elsewhere")
        if store.keys.partition(other).number != number:
            return other


async def test_a_failing_thread_does_not_block_the_takeover_of_later_partitions(
    store: EventStore,
) -> None:
    threads = [(await commands.create_thread(store, f"t{i}"))[0] for i in range(8)]
    numbers = {store.keys.partition(t).number for t in threads}
    assert len(numbers) > 1
    first = min(threads, key=lambda t: store.keys.partition(t).number)
    later = [
        t for t in threads if store.keys.partition(t).number != store.keys.partition(first).number
    ]
    await break_view(store, first)
    dead = Projector(store.backend, store, "dead")
    await dead.setup()
    # The dead projector read every feed and died before folding.
    await store.redis.xreadgroup(PROJECTORS_GROUP, "dead", {p.feed: ">" for p in store.keys.all()})
    heir = Projector(store.backend, store, "heir", claim_idle_ms=0)
    await heir._recover()
    for thread_id in later:
        assert await view_title(store, thread_id) is not None


async def test_a_redis_fault_in_one_thread_leaves_the_batch_unacked(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = await commands.create_thread(store, "t")
    part = store.keys.partition(thread_id)
    projector = Projector(store.backend, store, "p1")
    read_many = projector.views.read_many
    faults = [RedisConnectionError("connection lost")]

    async def flaky(part: Partition, thread_ids: list[str]) -> list[Snapshot]:
        if faults:
            raise faults.pop()
        return await read_many(part, thread_ids)

    monkeypatch.setattr(projector.views, "read_many", flaky)
    with pytest.raises(RedisConnectionError):
        await projector.run_once()
    assert await pending(store, part) == 1  # not acked: the pass is retried

    await projector.run_once()  # the retried pass folds what the failed one read
    assert await view_title(store, thread_id) == "t" and await pending(store, part) == 0


async def test_a_view_that_keeps_changing_is_not_acked(
    store: EventStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    thread_id, _ = await commands.create_thread(store, "t")
    part = store.keys.partition(thread_id)
    projector = Projector(store.backend, store, "p1")

    async def refused(snapshot: Snapshot, changes: object) -> bool:
        return False

    async def all_refused(part: Partition, items: list[Any]) -> list[bool]:
        return [False for _ in items]

    monkeypatch.setattr(projector.views, "save", refused)
    monkeypatch.setattr(projector.views, "save_many", all_refused)  # threads folded together
    with caplog.at_level(logging.WARNING, "slipstream.projector"):
        await projector.run_once()
    assert await pending(store, part) == 1
    assert projector.stats["contended"] == 1
    assert any("stay pending" in r.getMessage() for r in caplog.records)


async def test_own_pending_entries_are_read_in_pages_by_the_fold_loop_alone(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projector_module, "PENDING_PAGE", 3)
    first, _ = await commands.create_thread(store, "t0")
    part = store.keys.partition(first)
    threads = [first] + [await thread_in(store, part, f"t{i}") for i in range(1, 10)]
    projector = Projector(store.backend, store, "p1", claim_idle_ms=0)
    await projector.setup()
    # Read under this name and not acked, as by a run of it that was killed.
    await store.redis.xreadgroup(PROJECTORS_GROUP, "p1", {p.feed: ">" for p in store.keys.all()})
    await projector._takeover_pass()  # the fold loop reads them itself, first: left to it
    assert [await view_title(store, t) for t in threads] == [None] * 10
    await projector.run_once()  # ten of them in the partition: four pages
    assert [await view_title(store, t) for t in threads] == [f"t{i}" for i in range(10)]
    assert sum([await pending(store, p) for p in store.keys.all()]) == 0

    # Entries the fold loop holds are not taken over meanwhile by this name's takeover.
    late, _ = await commands.create_thread(store, "late")
    reply = await store.redis.xreadgroup(
        PROJECTORS_GROUP, "p1", {store.keys.partition(late).feed: ">"}
    )
    projector._holding = {entry_id for _, entries in reply for entry_id, _ in entries}
    await projector._takeover_pass()
    assert await view_title(store, late) is None
    projector._holding.clear()
    await projector._takeover_pass()
    assert await view_title(store, late) == "late"


async def test_a_long_pass_records_progress_and_a_stuck_one_is_reported(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    liveness = Liveness(clock=lambda: now[0])
    # A thread in each partition: the threads of one partition are folded together.
    threads = [await thread_in(store, part, f"t{part.number}") for part in store.keys.all()]
    projector = Projector(store.backend, store, "p1", liveness=liveness)
    await projector.setup()
    liveness.register(FOLD_LOOP, 10.0)
    advance_many: Callable[[Partition, list[str]], Awaitable[Any]] = projector._advance_many
    seen_down: list[dict[str, str]] = []

    async def slow(part: Partition, thread_ids: list[str]) -> Any:
        now[0] += 6.0  # each partition takes 6 s: the pass is longer than the window
        seen_down.append(liveness.down())
        return await advance_many(part, thread_ids)

    monkeypatch.setattr(projector, "_advance_many", slow)
    await projector._fold_pass()
    assert len(seen_down) == len(threads) >= 2 and all(not down for down in seen_down)

    now[0] += 11.0  # no pass finished, no thread folded: stuck
    assert FOLD_LOOP in liveness.down()
