"""What the inspector reads from Redis: plain data, rendered by service/inspect_text.py.

Each function reads with the commands its docstring names, so an operator can
check any of it with redis-cli (the README lists them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, cast

from redis.exceptions import ResponseError

from projections.thread_view import ThreadView
from projections.views import ViewStore
from service.commands import RESTARTED
from service.timeline import Item, timeline
from slipstream import errors
from slipstream import events as ev
from slipstream.backend import Entry, as_entries
from slipstream.keys import WORKERS_GROUP, Partition, thread_of_run
from slipstream.store import Append, EventStore, Stored

SCAN_PAGE = 1_000  # entries per XRANGE of the work and dead streams
PENDING_SCAN = 1_000  # pending entries looked at for the oldest idle one


@dataclass
class RunLine:
    id: str
    agent: str
    status: str
    attempts: int
    tools: int
    steps: int
    reason: str | None


@dataclass
class ThreadReport:
    thread: str
    partition: int
    stream_key: str
    events: int
    title: str
    owner: str | None
    members: list[str]
    last_event_id: str | None
    view_last: str | None  # the stored view's checkpoint (None: no view stored)
    runs: list[RunLine]
    timeline: list[Item]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def thread_report(store: EventStore, thread_id: str) -> ThreadReport:
    """XRANGE of the thread stream, HGETALL of its access hash and its view's `last`."""
    stored = await store.read(thread_id)
    if not stored:
        raise errors.ThreadNotFound(thread_id)
    part = store.keys.partition(thread_id)
    access = await store.redis.hgetall(part.access(thread_id))
    view_last = await store.redis.hget(part.view(thread_id), "last")
    view = await _current(store, thread_id)
    runs = [
        RunLine(
            run.id, run.agent, run.status, run.attempt, len(run.tools), len(run.steps), run.reason
        )
        for run in view.runs.values()
    ]
    return ThreadReport(
        thread=thread_id,
        partition=part.number,
        stream_key=part.thread(thread_id),
        events=len(stored),
        title=view.title,
        owner=str(access["owner"]) if access.get("owner") else None,
        members=sorted(str(name)[2:] for name in access if str(name).startswith("m:")),
        last_event_id=stored[-1].id,
        view_last=str(view_last) if view_last else None,
        runs=runs,
        timeline=timeline(stored),
    )


async def _current(store: EventStore, thread_id: str) -> ThreadView:
    """The stored view brought up to the stream's end, never saved: the inspector only reads
    (ViewStore.current would save a view it had to rebuild)."""
    views = ViewStore(store)
    snapshot = await views.read(thread_id)
    await views.advance(snapshot)
    return snapshot.view


@dataclass
class WorkItem:
    id: str
    pending: bool  # delivered to a worker and not acked
    consumer: str | None = None
    idle_ms: int | None = None
    deliveries: int | None = None


@dataclass
class Attempt:
    attempt: int
    started_id: str
    worker: str
    token: int
    outcome: str | None = None  # how it ended, as the stream says (None: still going)


@dataclass
class RunReport:
    run: str
    thread: str
    partition: int
    run_key: str
    state: dict[str, str]  # the run hash (empty: gone or never there)
    state_ttl_ms: int | None  # its time to live (None: it has none)
    view: dict[str, Any] | None  # the run as the thread view holds it
    attempts: list[Attempt]
    work: list[WorkItem]
    timer_due_ms: int | None
    queue_position: int | None
    holds_lane: str | None
    dead_letters: list[dict[str, str]]
    events: list[Item]  # the run's own events, deltas summarised

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def run_report(store: EventStore, run_id: str) -> RunReport:
    """HGETALL and PTTL of the run hash, XRANGE and XPENDING of the work stream, ZSCORE of
    the timers, LPOS in the thread's queue, HGETALL of the active lanes, XRANGE of the
    dead letters, and the thread stream's events of the run."""
    thread_id = thread_of_run(run_id)
    if thread_id is None:
        raise errors.RunNotFound(run_id)
    part = store.keys.partition(thread_id)
    redis = store.redis
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(part.run(run_id))
        pipe.pttl(part.run(run_id))
        pipe.zscore(part.timers, run_id)
        pipe.lpos(part.queue(thread_id), run_id)
        pipe.hgetall(part.active)
        state_raw, ttl, due, position, active = await pipe.execute()
    stored = await store.read(thread_id)
    own = [entry for entry in stored if getattr(entry.event, "run_id", None) == run_id]
    view = await _current(store, thread_id) if stored else None
    run_view = view.runs.get(run_id) if view is not None else None
    if not state_raw and run_view is None:
        raise errors.RunNotFound(run_id)
    lane = next(
        (
            str(name).split(":", 1)[1]
            for name, holder in active.items()
            if str(holder) == run_id and str(name).startswith(f"{thread_id}:")
        ),
        None,
    )
    return RunReport(
        run=run_id,
        thread=thread_id,
        partition=part.number,
        run_key=part.run(run_id),
        state={str(k): str(v) for k, v in state_raw.items()},
        state_ttl_ms=int(ttl) if int(ttl) >= 0 else None,
        view=run_view.model_dump(mode="json") if run_view is not None else None,
        attempts=attempts(own),
        work=await _work_items(store, part, run_id),
        timer_due_ms=int(due) if due is not None else None,
        queue_position=int(position) if position is not None else None,
        holds_lane=lane,
        dead_letters=[
            letter for letter in await dead_letters(store, [part]) if letter["run"] == run_id
        ],
        events=timeline(own),
    )


def attempts(own: list[Stored]) -> list[Attempt]:
    """Each attempt of a run from its run.started, with the event that ended it."""
    found: list[Attempt] = []
    for entry in own:
        event = entry.event
        if isinstance(event, ev.RunStarted):
            found.append(Attempt(event.attempt, entry.id, event.worker, event.token))
        elif found and found[-1].outcome is None:
            if isinstance(event, ev.RunRetrying):
                found[-1].outcome = f"retrying: {event.reason}"
            elif isinstance(event, ev.RunFailed):
                found[-1].outcome = f"failed: {event.reason}"
            elif isinstance(event, ev.RunCancelled):
                found[-1].outcome = "cancelled"
            elif isinstance(event, ev.RunCompleted):
                found[-1].outcome = "completed"
            elif isinstance(event, ev.RunWaiting):
                found[-1].outcome = f"waiting for {event.waiting_for}"
    return found


async def _work_items(store: EventStore, part: Partition, run_id: str) -> list[WorkItem]:
    """The run's entries in the work stream, each with its XPENDING entry if delivered."""
    items = [
        entry_id
        for entry_id, fields in await _scan(store, part.work)
        if fields.get("run") == run_id
    ]
    found: list[WorkItem] = []
    for entry_id in items:
        try:
            pending = await store.redis.xpending_range(
                part.work, WORKERS_GROUP, entry_id, entry_id, 1
            )
        except ResponseError:  # no group yet
            pending = []
        if pending:
            p = pending[0]
            found.append(
                WorkItem(
                    entry_id,
                    True,
                    str(p["consumer"]),
                    int(p["time_since_delivered"]),
                    int(p["times_delivered"]),
                )
            )
        else:
            found.append(WorkItem(entry_id, False))
    return found


async def _scan(
    store: EventStore, key: str, *, newest_first: bool = False, limit: int | None = None
) -> list[Entry]:
    """A whole (bounded) stream, in pages: the work and dead streams are short."""
    entries: list[Entry] = []
    start, end = "-", "+"
    while True:
        if newest_first:
            page = cast(list[Entry], await store.redis.xrevrange(key, end, start, count=SCAN_PAGE))
        else:
            page = cast(list[Entry], await store.redis.xrange(key, start, end, count=SCAN_PAGE))
        entries += as_entries(page)
        if len(page) < SCAN_PAGE or (limit is not None and len(entries) >= limit):
            return entries[:limit] if limit is not None else entries
        if newest_first:
            end = f"({page[-1][0]}"
        else:
            start = f"({page[-1][0]}"


async def dead_letters(
    store: EventStore, parts: Iterable[Partition], limit: int | None = None
) -> list[dict[str, str]]:
    """XREVRANGE of each partition's dead letters (newest first), with each run's status
    now (HGET of its hash: `requeued` runs show `queued`, `running` or how they ended)."""
    letters: list[dict[str, str]] = []
    for part in parts:
        for entry_id, fields in await _scan(store, part.dead, newest_first=True, limit=limit):
            letters.append(
                {
                    "id": entry_id,
                    "partition": str(part.number),
                    "run": str(fields.get("run", "")),
                    "thread": str(fields.get("thread", "")),
                    "reason": str(fields.get("reason", "")),
                }
            )
    letters.sort(key=lambda letter: _position(letter["id"]), reverse=True)
    if limit is not None:
        letters = letters[:limit]
    if letters:
        async with store.redis.pipeline(transaction=False) as pipe:
            for letter in letters:
                part = store.keys.partition(letter["thread"])
                pipe.hget(part.run(letter["run"]), "status")
            statuses = await pipe.execute()
        for letter, status in zip(letters, statuses, strict=True):
            letter["status_now"] = str(status) if status is not None else "gone"
    return letters


def _position(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class GroupLag:
    partition: int
    stream: str  # "work" or "feed"
    key: str
    length: int
    group: str
    consumers: int
    pending: int
    lag: int | None  # entries not delivered yet (None: Redis cannot tell)
    last_delivered: str
    oldest_idle_ms: int | None  # the longest a pending entry has waited for its ack
    oldest_idle_consumer: str | None = None


async def lag(store: EventStore) -> list[GroupLag]:
    """XLEN, XINFO GROUPS and XPENDING (extended) of each partition's work and feed streams."""
    found: list[GroupLag] = []
    for part in store.keys.all():
        for name, key in (("work", part.work), ("feed", part.feed)):
            try:
                groups = await store.redis.xinfo_groups(key)
            except ResponseError:  # no such stream yet
                continue
            length = int(await store.redis.xlen(key))
            for group in groups:
                oldest, who = None, None
                if int(group["pending"]):
                    pending = await store.redis.xpending_range(
                        key, group["name"], "-", "+", PENDING_SCAN
                    )
                    if pending:
                        top = max(pending, key=lambda p: int(p["time_since_delivered"]))
                        oldest, who = int(top["time_since_delivered"]), str(top["consumer"])
                raw_lag = group.get("lag")
                found.append(
                    GroupLag(
                        partition=part.number,
                        stream=name,
                        key=key,
                        length=length,
                        group=str(group["name"]),
                        consumers=int(group["consumers"]),
                        pending=int(group["pending"]),
                        lag=int(raw_lag) if raw_lag is not None else None,
                        last_delivered=str(group["last-delivered-id"]),
                        oldest_idle_ms=oldest,
                        oldest_idle_consumer=who,
                    )
                )
    return found


@dataclass
class Requeued:
    run: str
    thread: str
    was: str
    status: str = "queued"


REQUEUE_REASON = "requeued by an operator (python -m service inspect requeue)"


async def requeue(store: EventStore, run_id: str) -> Requeued:
    """Put a dead (failed) run back to work as the chat's Retry does (`commands.restart_run`),
    in one append that checks the run is still failed (fenced: a run requeued or retried
    meanwhile is refused, so it starts once), resets its failures and lease, appends
    `run.restarted` and admits it: a work item, or a place behind its lane's active run."""
    thread_id = thread_of_run(run_id)
    if thread_id is None:
        raise errors.RunNotFound(run_id)
    status = (await store.run_state(run_id, thread_id)).get("status")
    if status is None:
        raise errors.RunNotFound(run_id)
    if status != "failed":
        raise errors.RunStatusChanged(run_id, f"{status}, not failed: only a dead run is requeued")
    try:
        await store.append(
            Append(
                thread_id=thread_id,
                events=[ev.RunRestarted(run_id=run_id, reason=REQUEUE_REASON)],
                run_id=run_id,
                expect_status=("failed",),  # Retry takes cancelled runs too; requeue only dead ones
                run_fields=RESTARTED,
                work=True,
                refuse_if_queue_full=True,
                dedupe=True,  # a resent call (redis-py resends on a dropped connection) writes once
            )
        )
    except errors.RunStatusChanged:
        now = (await store.run_state(run_id, thread_id)).get("status", "gone")
        raise errors.RunStatusChanged(
            run_id, f"{now}, not failed: only a dead run is requeued"
        ) from None
    return Requeued(run_id, thread_id, status)
