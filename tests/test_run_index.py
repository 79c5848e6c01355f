"""Projected runs: paged from per-partition indexes, and finished ones trimmed after retention."""

from __future__ import annotations

from projections.projector import Projector
from projections.run_index import Cursor
from projections.thread_view import RunSummary, ThreadView, fold
from projections.views import ViewStore
from service import commands
from slipstream import codec
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import new_id, new_run_id, new_thread_id
from slipstream.store import Append, EventStore
from tests.harness import running_system

AGENTS = ("assistant", "critic")


def run_events(run_id: str, agent: str, ending: str) -> list[ev.Event]:
    message_id = new_id("m")
    events: list[ev.Event] = [
        ev.MessageSent(message_id=message_id, content="q", agent=agent, run_id=run_id),
        ev.RunRequested(run_id=run_id, message_id=message_id, reply_id=new_id("m"), agent=agent),
    ]
    if ending == "completed":
        events += [
            ev.RunStarted(run_id=run_id, attempt=1, worker="w", token=1),
            ev.RunCompleted(run_id=run_id),
        ]
    elif ending == "failed":
        events.append(ev.RunFailed(run_id=run_id, reason="no"))
    return events


async def many_runs(store: EventStore, threads: int = 6) -> list[RunSummary]:
    """Runs over several partitions, some requested in the same millisecond."""
    endings = ("completed", "failed", "queued")
    for t in range(threads):
        thread_id, _ = await commands.create_thread(store)
        for batch in range(3):
            events: list[ev.Event] = []
            for i in range(1 + batch % 2):  # two runs of one batch share a millisecond
                n = t + batch + i
                events += run_events(new_run_id(thread_id), AGENTS[n % 2], endings[n % 3])
            await store.append(Append(thread_id, events))
    await Projector(store.backend, store, "p1").run_once()
    expected: list[RunSummary] = []
    for part in store.keys.all():
        for thread_id in await store.redis.zrange(part.threads, 0, -1):
            view = fold(ThreadView.empty(thread_id, ""), await store.read(thread_id))
            expected += view.run_summaries()
    expected.sort(key=lambda r: (r.requested_at, r.id), reverse=True)
    return expected


async def all_pages(
    views: ViewStore, limit: int, status: str | None = None, agent: str | None = None
) -> tuple[list[RunSummary], int]:
    found: list[RunSummary] = []
    cursor: Cursor | None = None
    pages = 0
    while True:
        page = await views.runs(status=status, agent=agent, limit=limit, before=cursor)
        pages += 1
        found += page.runs
        assert len(page.runs) <= limit
        if page.next is None:
            return found, pages
        cursor = page.next
        assert pages < 100


async def test_pages_give_every_run_once_newest_first(store: EventStore) -> None:
    expected = await many_runs(store)
    assert len(expected) == 6 * 4
    views = ViewStore(store)
    for limit in (1, 4, 7, 100):
        found, pages = await all_pages(views, limit)
        assert [r.id for r in found] == [r.id for r in expected], limit
        assert pages in (-(-len(expected) // limit), -(-len(expected) // limit) + 1)
    for status in ("completed", "failed", "queued"):
        found, _ = await all_pages(views, 3, status=status)
        assert found == [r for r in expected if r.status == status]
    found, _ = await all_pages(views, 2, agent="critic")
    assert found == [r for r in expected if r.agent == "critic"]
    found, _ = await all_pages(views, 5, status="completed", agent="assistant")
    assert found == [r for r in expected if r.status == "completed" and r.agent == "assistant"]


async def test_a_status_change_moves_the_run_between_indexes(store: EventStore) -> None:
    thread_id, _ = await commands.create_thread(store)
    run_id = new_run_id(thread_id)
    await store.append(Append(thread_id, run_events(run_id, "assistant", "failed")))
    projector = Projector(store.backend, store, "p1")
    await projector.run_once()
    views = ViewStore(store)
    assert [r.id for r in (await views.runs(status="failed")).runs] == [run_id]
    await store.append(Append(thread_id, [ev.RunRestarted(run_id=run_id)]))
    await projector.run_once()
    assert (await views.runs(status="failed")).runs == []
    assert [r.status for r in (await views.runs(status="queued")).runs] == ["queued"]
    part = store.keys.partition(thread_id)
    assert await store.redis.zscore(part.runs_ended, run_id) is None  # not finished any more


async def old_thread(store: EventStore, partition: int, ending: str) -> tuple[str, str]:
    """A thread whose events were written long ago (ids at 1 s after the epoch)."""
    while True:
        thread_id = new_thread_id()
        if store.keys.partition(thread_id).number == partition:
            break
    run_id = new_run_id(thread_id)
    events = [ev.ThreadCreated(title="old"), *run_events(run_id, "assistant", ending)]
    for seq, event in enumerate(events):
        await store.redis.xadd(
            store.stream_key(thread_id), codec.encode(event), id=f"1000-{seq + 1}"
        )
    return thread_id, run_id


async def test_finished_runs_past_retention_are_trimmed(store: EventStore) -> None:
    projector = Projector(store.backend, store, "p1", run_retention_s=3600)
    thread_id, _ = await commands.create_thread(store)
    part = store.keys.partition(thread_id)
    old_done, done_run = await old_thread(store, part.number, "completed")
    old_queued, queued_run = await old_thread(store, part.number, "queued")
    await projector.project_thread(old_done)
    await projector.project_thread(old_queued)
    views = ViewStore(store)
    assert {r.id for r in (await views.runs()).runs} == {done_run, queued_run}

    # A save in the same partition an hour later trims what finished before then.
    recent = new_run_id(thread_id)
    await store.append(Append(thread_id, run_events(recent, "assistant", "completed")))
    await projector.project_thread(thread_id)
    assert [r.id for r in (await views.runs()).runs] == [recent, queued_run]
    assert not await store.redis.hexists(part.runs, done_run)
    for key in (part.runs_by_time, part.runs_ended, part.runs_with_status("completed")):
        assert await store.redis.zscore(key, done_run) is None
    # The thread's own view still has the run: only the listing forgets it.
    view = await views.current(old_done)
    assert view.runs[done_run].status == "completed"


async def test_runs_over_http_are_paged_with_a_cursor_header(
    backend: Backend, settings: Settings
) -> None:
    async with running_system(backend, settings, workers=False) as system:
        store = system.runtime.store
        expected = await many_runs(store, threads=3)
        seen: list[str] = []
        params: dict[str, str] = {"limit": "4"}
        while True:
            response = await system.http.get("/api/runs", params=params)
            assert response.status_code == 200, response.text
            seen += [r["id"] for r in response.json()]
            cursor = response.headers.get("x-next-cursor")
            if cursor is None:
                assert "link" not in response.headers
                break
            assert response.headers["link"].endswith('>; rel="next"')
            assert f"cursor={cursor.replace(':', '%3A')}" in response.headers["link"]
            params["cursor"] = cursor
        assert seen == [r.id for r in expected]

        bad = await system.http.get("/api/runs", params={"cursor": "yesterday"})
        assert bad.status_code == 400 and "not a runs cursor" in bad.json()["detail"]


def test_cursors_round_trip() -> None:
    cursor = Cursor(1700000000000, "tabc.0123ab")
    assert Cursor.parse(str(cursor)) == cursor
