"""Stored thread views: read once, catch up from the stream, save what changed.

A view is a hash laid out by `view_layout` (one field per message and run),
saved by `store_view.lua` with compare-and-set on the id of the last event
folded in. A stored view of another schema version, or one that does not
parse, is rebuilt from the thread stream and overwritten, by whoever reads it
first (a reader or the projector), with one warning.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from pydantic import ValidationError
from redis.exceptions import NoScriptError

from projections import run_index, search_index
from projections.thread_view import (
    SCHEMA_VERSION,
    Changes,
    RunStatus,
    ThreadSummary,
    ThreadView,
    fold_into,
    stream_ms,
)
from projections.view_layout import Unparseable, decode, encode
from slipstream import codec
from slipstream.backend import Entry, as_entries
from slipstream.keys import Partition, stream_id_tuple
from slipstream.store import EventStore, Stored

log = logging.getLogger("slipstream.views")

_STORE_LUA = (Path(__file__).parent / "store_view.lua").read_text()
STATUSES: tuple[str, ...] = get_args(RunStatus)
TERMINAL = frozenset({"completed", "cancelled", "failed"})
DEFAULT_RUN_RETENTION_S = 7 * 86_400
TRIM_PER_SAVE = 20  # each run saves many times, so this outpaces the runs that finish


class FoldFailed(Exception):
    """The thread's events do not fold, even into an empty view: a fold bug, not bad state."""


@dataclass
class Snapshot:
    """A view as read (or rebuilt), with what its next save must compare and write."""

    view: ThreadView
    numbers: dict[str, int] = field(default_factory=dict)  # run id -> its field number
    stored_last: str | None = None  # the stored `last` the save compares against
    rebuild: bool = True  # the next save rewrites the whole hash
    bad: bool = False  # what is stored is unusable: overwrite it even from a reader
    # Runs not finished, so the summary's active run is found without a look at every run.
    unfinished: set[str] = field(default_factory=set)
    # The title the search index holds (None: unknown), and whether the index holds
    # none of the thread, or one of another INDEX_VERSION: its next save indexes all.
    indexed_title: str | None = None
    index_stale: bool = True
    # Message position -> hash of the text the index holds for it, as this snapshot
    # wrote it: a save that changes a message's status but not its text skips it.
    indexed_texts: dict[int, int] = field(default_factory=dict)


@dataclass
class _SaveCall:
    """One call of the store script, and what the snapshot notes once it stored."""

    keys: list[str]
    args: list[str]
    unfinished: set[str]  # the runs not finished once it is saved
    texts: dict[int, int]  # message position -> hash of the text it indexed


class ViewStore:
    def __init__(
        self, store: EventStore, *, run_retention_s: int = DEFAULT_RUN_RETENTION_S
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.run_retention_ms = run_retention_s * 1000
        self._store = self.redis.register_script(_STORE_LUA)

    def _empty(self, thread_id: str) -> ThreadView:
        return ThreadView.empty(thread_id, self.store.stream_key(thread_id))

    async def read(self, thread_id: str) -> Snapshot:
        """The stored view, in one HGETALL; an empty one to rebuild if it is missing or unusable.

        With it, in the same MULTI, the version of the thread's search index (they are
        written together, so the pair is consistent).
        """
        part = self.keys.partition(thread_id)
        async with self.store.backend.pipeline_for(part.view(thread_id)) as pipe:
            pipe.hgetall(part.view(thread_id))
            pipe.hget(part.search_doc(thread_id), "v")
            reply, index_version = await pipe.execute()
        fields = {str(name): str(value) for name, value in reply.items()}
        return self._snapshot(thread_id, fields, str(index_version or ""))

    def _snapshot(self, thread_id: str, fields: dict[str, str], index_version: str) -> Snapshot:
        """A view's stored fields (and its search index's version), as a Snapshot."""
        if not fields:
            return Snapshot(self._empty(thread_id))
        last = fields.get("last")
        try:
            view, numbers = decode(fields)
        except Unparseable as exc:
            log.warning(
                "view of thread %s is unusable (%s); rebuilding it from the stream", thread_id, exc
            )
            return Snapshot(self._empty(thread_id), stored_last=last, bad=True)
        unfinished = {run.id for run in view.runs.values() if run.status not in TERMINAL}
        return Snapshot(
            view,
            numbers,
            last,
            rebuild=False,
            unfinished=unfinished,
            indexed_title=view.title,
            index_stale=index_version != str(search_index.INDEX_VERSION),
        )

    async def load(self, thread_id: str) -> ThreadView | None:
        """The stored view as it is, or None if there is none it can use."""
        snapshot = await self.read(thread_id)
        return None if snapshot.rebuild else snapshot.view

    async def read_many(self, part: Partition, thread_ids: list[str]) -> list[Snapshot]:
        """`read` of several threads of `part`, in one MULTI (one round trip)."""
        async with self.store.backend.pipeline_for(part.view(thread_ids[0])) as pipe:
            for thread_id in thread_ids:
                pipe.hgetall(part.view(thread_id))
                pipe.hget(part.search_doc(thread_id), "v")
            replies = await pipe.execute()
        return [
            self._snapshot(
                thread_id,
                {str(name): str(value) for name, value in replies[2 * n].items()},
                str(replies[2 * n + 1] or ""),
            )
            for n, thread_id in enumerate(thread_ids)
        ]

    async def advance(self, snapshot: Snapshot) -> Changes:
        """Fold the stream's events past the snapshot into it, in place.

        If they do not fold into the stored view, it is treated as unusable
        and rebuilt from the whole stream; FoldFailed if even that fails.
        """
        missing = await self.store.read(snapshot.view.id, after=snapshot.view.last_event_id)
        return await self._fold_new(snapshot, missing)

    async def advance_many(
        self, part: Partition, snapshots: list[Snapshot]
    ) -> list[Changes | FoldFailed]:
        """`advance` of several snapshots of `part`'s threads, their new events read in
        one round trip (a thread with more than a page of them reads the rest on its own).

        A thread whose events do not fold has a FoldFailed in its place.
        """
        page = self.store.read_page
        async with self.store.backend.pipeline_for(
            part.thread(snapshots[0].view.id), transaction=False
        ) as pipe:
            for snapshot in snapshots:
                after = snapshot.view.last_event_id
                pipe.xrange(part.thread(snapshot.view.id), f"({after}" if after else "-", "+", page)
            replies = await pipe.execute()
        results: list[Changes | FoldFailed] = []
        for snapshot, reply in zip(snapshots, replies, strict=True):
            key = part.thread(snapshot.view.id)
            try:
                if len(reply) >= page:
                    results.append(await self.advance(snapshot))
                    continue
                missing = [Stored(i, codec.decode(key, i, f)) for i, f in as_entries(reply)]
                results.append(await self._fold_new(snapshot, missing))
            except FoldFailed as exc:
                results.append(exc)
        return results

    async def _fold_new(self, snapshot: Snapshot, missing: list[Stored]) -> Changes:
        """Fold `missing` (the events after the snapshot) into it, or rebuild it (`advance`)."""
        thread_id = snapshot.view.id
        after = snapshot.view.last_event_id
        if not missing:
            return Changes()
        try:
            return fold_into(snapshot.view, missing)
        except Exception as exc:
            if after is None:
                raise FoldFailed(thread_id) from exc
            log.warning(
                "thread %s: its events do not fold into the stored view (%r); rebuilding it",
                thread_id,
                exc,
            )
        snapshot.view, snapshot.numbers, snapshot.unfinished = self._empty(thread_id), {}, set()
        snapshot.rebuild = snapshot.bad = True
        everything = await self.store.read(thread_id)
        try:
            return fold_into(snapshot.view, everything)
        except Exception as exc:
            raise FoldFailed(thread_id) from exc

    async def current(self, thread_id: str) -> ThreadView:
        """The stored view brought up to the stream's end: fresh even if projectors lag."""
        snapshot = await self.read(thread_id)
        changes = await self.advance(snapshot)
        if snapshot.bad and changes.events:
            await self.save(snapshot, changes)  # if a projector got there first, it wins
        return snapshot.view

    async def current_from(
        self,
        thread_id: str,
        fields: dict[str, str],
        tail: list[Entry],
        *,
        whole: bool,
    ) -> ThreadView:
        """`current`, from a view and the events after it read already (a worker's claim
        reads them in its round trip); `whole`: `tail` reaches the stream's end. It is
        never saved from here, so the search index's version is not needed."""
        snapshot = self._snapshot(thread_id, fields, index_version="")
        key = self.store.stream_key(thread_id)
        events = [Stored(entry_id, codec.decode(key, entry_id, f)) for entry_id, f in tail]
        if not whole or snapshot.bad or not events:
            # Too far behind, or a view to rebuild: the ordinary way, which reads as it needs.
            # (No view stored at all is no exception: the tail is then the whole stream.)
            return await self.current(thread_id)
        try:
            fold_into(snapshot.view, events)
        except Exception:
            return await self.current(thread_id)  # which rebuilds it, with its warning
        return snapshot.view

    async def reindex(self, thread_id: str) -> bool:
        """Write the thread's whole search index (the view brought up to date with it);
        False if its view kept moving under this (a projector indexes it then anyway)."""
        for _ in range(5):
            snapshot = await self.read(thread_id)
            if snapshot.rebuild and not await self.store.exists(thread_id):
                return True  # deleted: nothing to index
            changes = await self.advance(snapshot)
            snapshot.index_stale = True
            if await self.save(snapshot, changes):
                return True
        return False

    async def save(self, snapshot: Snapshot, changes: Changes) -> bool:
        """Write what `changes` touched (all, for a rebuild) if the stored view is unchanged."""
        call = await self._save_call(snapshot, changes)
        stored = await self._store(keys=call.keys, args=call.args)
        return self._saved(snapshot, call, bool(stored))

    async def save_many(self, part: Partition, items: list[tuple[Snapshot, Changes]]) -> list[bool]:
        """`save` of several views of `part`'s threads, in one round trip.

        Each is compared and set on its own, as `save` does (a refused one is False).
        A save that indexes text first reads what the index holds, on its own: that is
        a message that ended or a rename, never a delta.
        """
        calls = [await self._save_call(snapshot, changes) for snapshot, changes in items]
        # EVALSHA itself rather than the script object: on a pipeline that asks Redis
        # whether the script is loaded first, a round trip more; a server that lacks it
        # answers NOSCRIPT, and that save goes again through the script, which loads it.
        async with self.store.backend.pipeline_for(
            part.view(items[0][0].view.id), transaction=False
        ) as pipe:
            for call in calls:
                pipe.evalsha(self._store.sha, len(call.keys), *call.keys, *call.args)
            replies = await pipe.execute(raise_on_error=False)
        results: list[bool] = []
        for (snapshot, _), call, reply in zip(items, calls, replies, strict=True):
            if isinstance(reply, NoScriptError):
                reply = await self._store(keys=call.keys, args=call.args)
            elif isinstance(reply, Exception):
                raise reply
            results.append(self._saved(snapshot, call, bool(reply)))
        return results

    def _saved(self, snapshot: Snapshot, call: _SaveCall, stored: bool) -> bool:
        """Note in the snapshot what a save wrote, if it did."""
        if stored:
            snapshot.stored_last = snapshot.view.last_event_id
            snapshot.unfinished = call.unfinished
            snapshot.rebuild = snapshot.bad = snapshot.index_stale = False
            snapshot.indexed_title = snapshot.view.title
            snapshot.indexed_texts.update(call.texts)
        return stored

    async def _save_call(self, snapshot: Snapshot, changes: Changes) -> _SaveCall:
        """The keys and arguments of the store script for a save, and what it will note."""
        view = snapshot.view
        part = self.keys.partition(view.id)
        pairs, runs = encode(view, snapshot.numbers, None if snapshot.rebuild else changes)
        run_args: list[str] = []
        unfinished = set(snapshot.unfinished)
        for run in runs:
            if run.status in TERMINAL:
                unfinished.discard(run.id)
            else:
                unfinished.add(run.id)
            ended = run.ended_at if run.status in TERMINAL and run.ended_at is not None else None
            run_args += (
                run.id,
                view.run_summary(run).model_dump_json(),
                str(run.requested_at),
                str(STATUSES.index(run.status) + 1),
                "" if ended is None else str(ended),
            )
        cutoff = (
            str(stream_ms(view.last_event_id) - self.run_retention_ms) if view.last_event_id else ""
        )
        index_all = snapshot.rebuild or snapshot.index_stale
        sources, texts = _index_sources(snapshot, changes, index_all=index_all)
        words: list[str] = []
        if sources:
            # What the doc holds for these sources now names the posting sets the save
            # may change (the words a source loses too): one read, only for a save
            # that indexes (a message that ended, a rename), never for a delta.
            held = await self.redis.hmget(
                part.search_doc(view.id), [f"s:{source.name}" for source in sources]
            )
            words = search_index.touched_words(
                sources, [None if value is None else str(value) for value in held]
            )
        return _SaveCall(
            keys=[
                part.view(view.id),
                part.summaries,
                part.runs,
                part.runs_by_time,
                part.runs_ended,
                part.thread(view.id),
                *(part.runs_with_status(status) for status in STATUSES),
                *([part.search_doc(view.id)] if sources else []),
                *(part.search_word(word) for word in words),
            ],
            args=[
                snapshot.stored_last or "",
                view.last_event_id or "",
                str(SCHEMA_VERSION),
                "replace" if snapshot.rebuild else "update",
                view.id,
                view.summary(
                    sorted(unfinished, key=snapshot.numbers.__getitem__)
                ).model_dump_json(),
                cutoff,
                str(TRIM_PER_SAVE),
                str(len(pairs) // 2),
                str(len(STATUSES)),
                str(len(sources)),
                str(search_index.INDEX_VERSION) if index_all else "",
                *pairs,
                *(part for source in sources for part in (source.name, source.encoded)),
                *words,
                *run_args,
            ],
            unfinished=unfinished,
            texts=texts,
        )

    async def runs(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 100,
        before: run_index.Cursor | None = None,
    ) -> run_index.RunPage:
        """Runs as the projector last saw them, newest first, across partitions."""
        return await run_index.page(
            self.redis, self.keys.all(), status=status, agent=agent, limit=limit, before=before
        )

    async def summary(self, thread_id: str, *, at_least: str | None = None) -> ThreadSummary:
        """The projected summary if it has folded `at_least`, else one built from the stream."""
        raw = await self.redis.hget(self.keys.partition(thread_id).summaries, thread_id)
        summary = _parsed(str(raw) if raw else None)
        if summary is not None and (
            at_least is None
            or (
                summary.last_event_id is not None
                and stream_id_tuple(summary.last_event_id) >= stream_id_tuple(at_least)
            )
        ):
            return summary
        return (await self.current(thread_id)).summary()

    async def summaries(self, limit: int) -> list[ThreadSummary]:
        """The most recently active threads across partitions, newest first."""
        per_partition: list[list[tuple[str, float]]] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in self.keys.all():
                pipe.zrevrange(part.threads, 0, limit - 1, withscores=True)
            for reply in await pipe.execute():
                per_partition.append([(str(m), float(s)) for m, s in reply])
        newest = heapq.nlargest(
            limit, (item for items in per_partition for item in items), key=lambda i: i[1]
        )
        return await self._summaries(newest)

    async def summaries_of(self, thread_ids: Iterable[str], limit: int) -> list[ThreadSummary]:
        """The most recently active of `thread_ids` (one user's), newest first."""
        by_partition: dict[int, list[str]] = {}
        for thread_id in thread_ids:
            by_partition.setdefault(self.keys.partition(thread_id).number, []).append(thread_id)
        if not by_partition:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for number, ids in by_partition.items():
                pipe.zmscore(Partition(number).threads, ids)
            replies = await pipe.execute()
        scored = [
            (thread_id, float(score))
            for ids, scores in zip(by_partition.values(), replies, strict=True)
            for thread_id, score in zip(ids, scores, strict=True)
            if score is not None
        ]
        return await self._summaries(heapq.nlargest(limit, scored, key=lambda i: i[1]))

    async def _summaries(self, newest: list[tuple[str, float]]) -> list[ThreadSummary]:
        ids = [thread_id for thread_id, _ in newest]
        async with self.redis.pipeline(transaction=False) as pipe:
            for thread_id in ids:
                pipe.hget(self.keys.partition(thread_id).summaries, thread_id)
            raws = await pipe.execute()
        result: list[ThreadSummary] = []
        for (thread_id, score), raw in zip(newest, raws, strict=True):
            summary = _parsed(str(raw) if raw else None)
            if summary is None:
                # Not projected yet (or unreadable): build it so a new thread shows at once.
                summary = (await self.current(thread_id)).summary()
            summary.updated_at = max(summary.updated_at, int(score))
            result.append(summary)
        return result


def _index_sources(
    snapshot: Snapshot, changes: Changes, *, index_all: bool
) -> tuple[list[search_index.Source], dict[int, int]]:
    """The search sources a save writes, and the hashes of the message texts among them.

    Everything when the index holds nothing of the thread (or is of another version);
    else the title if it changed, and the changed messages whose final text the
    index does not hold yet.
    """
    view = snapshot.view
    if index_all:
        snapshot.indexed_texts.clear()
        positions: Iterable[int] = range(len(view.messages))
    else:
        positions = [
            n
            for n in changes.messages
            if n < len(view.messages)
            and snapshot.indexed_texts.get(n) != hash(view.messages[n].content)
        ]
    sources = search_index.message_sources(view, positions)
    texts = {int(source.name): hash(view.messages[int(source.name)].content) for source in sources}
    if index_all or view.title != snapshot.indexed_title:
        sources.insert(0, search_index.title_source(view))
    return sources, texts


def _parsed(raw: str | None) -> ThreadSummary | None:
    if not raw:
        return None
    try:
        return ThreadSummary.model_validate_json(raw)
    except ValidationError:
        return None
