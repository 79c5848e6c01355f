"""Deleting a thread: every key of it, in one script over its partition's keys.

The script (slipstream/lua/delete_thread.lua) is given every key it touches. They
are named from what is read first: the view brought up to the stream's end (its
runs, and its messages' client ids), the access hash (owner and members) and the
search doc (the thread's words). Between that read and the script the thread may
move on (a delta, a new run, a member, a projector's save); the script compares
the stream's last id and the view's checkpoint with what was read and, if either
moved, deletes nothing and says so, and all is read again. So nothing named
after the read is left behind.

What the script cannot name stays until it lapses or is swept:
- the dedupe keys of appends made without a client id (named by event ids) and
  of run commands sent with one: each has the resend window (SLIPSTREAM_DEDUPE_WINDOW_S,
  a day by default) as its lifetime;
- work items and dead letters of its runs, entries in the partition's work and
  dead streams: swept here after the script, page by page (a work item a worker
  takes meanwhile finds no run hash and is dropped);
- the partition feed's copies of its events, which age out as the feed is trimmed
  (SLIPSTREAM_FEED_MAXLEN); a projector reading them finds no stream, so writes
  nothing (store_view.lua refuses a thread whose stream is gone);
- each user's list of runs for the runs-at-once limit (`ss:{rate}:runs:<user>`),
  which drops runs whose hash is gone at its next check and lapses by itself.

A worker running one of its runs stops: the run ids are announced as cancelled,
its lease renewal finds no run hash, and its next append is refused (the thread
is gone), which the worker takes as the end of the run (consumers/worker.py).
"""

from __future__ import annotations

import contextlib
from importlib import resources
from typing import cast

from redis.exceptions import ResponseError

from projections import search_index
from projections.views import STATUSES, FoldFailed, ViewStore
from slipstream import errors
from slipstream import events as ev
from slipstream.backend import Entry
from slipstream.keys import WORKERS_GROUP, Partition
from slipstream.store import EventStore
from slipstream.threads import message_dedupe_key

_DELETE_LUA = resources.files("slipstream").joinpath("lua/delete_thread.lua").read_text()
ATTEMPTS = 20  # reads that the thread moved past; a streaming answer moves it every flush
SWEEP_PAGE = 500


class ThreadKeptChanging(errors.SlipstreamError):
    """The thread moved on between each read and the delete: try again."""


class Deleter:
    def __init__(self, store: EventStore, views: ViewStore) -> None:
        self.store = store
        self.views = views
        self.redis = store.redis
        self._script = self.redis.register_script(_DELETE_LUA)

    async def delete(self, thread_id: str) -> bool:
        """Delete the thread; False if there is none."""
        part = self.store.keys.partition(thread_id)
        for _ in range(ATTEMPTS):
            outcome = await self._attempt(part, thread_id)
            if outcome == "GONE":
                return False
            if outcome == "DELETED":
                await self._announce(part, thread_id)
                await self._sweep(part.work, thread_id, group=WORKERS_GROUP)
                await self._sweep(part.dead, thread_id)
                return True
        raise ThreadKeptChanging(
            f"thread {thread_id!r} kept changing while it was being deleted; try again"
        )

    async def _announce(self, part: Partition, thread_id: str) -> None:
        """Tell the thread lists: a `thread.deleted` entry in the partition feed, which
        every web process tails (their list sockets send the whole list again) and a
        projector passes by (there is no stream to fold). Not an event of the thread:
        its stream is gone. Lost with a Redis fault, a list shows the thread until the
        page loads it again."""
        await self.redis.xadd(
            part.feed,
            {"type": "thread.deleted", "thread": thread_id},
            maxlen=self.store.feed_maxlen,
            approximate=True,
        )

    async def _attempt(self, part: Partition, thread_id: str) -> str:
        last, runs, client_ids = await self._history(thread_id)
        if last is None and not await self.store.exists(thread_id):
            return "GONE"
        # The view's checkpoint and the search doc in one MULTI: they are saved together.
        # After the history: reading it may have rebuilt a view of an older layout, and
        # that save wrote the thread's whole index under the same checkpoint.
        async with self.store.backend.pipeline_for(part.view(thread_id)) as pipe:
            pipe.hget(part.view(thread_id), "last")
            pipe.hgetall(part.search_doc(thread_id))
            view_last, doc = await pipe.execute()
        # After the history: a member added since is in the stream, past what was read.
        access = await self.redis.hgetall(part.access(thread_id))
        users = {str(access["owner"])} if access.get("owner") else set()
        users.update(str(name)[2:] for name in access if str(name).startswith("m:"))
        dedupes = sorted({part.dedupe(message_dedupe_key(thread_id, c)) for c in client_ids})
        words: set[str] = set()
        for name, value in doc.items():
            if str(name).startswith("s:"):
                words.update(search_index.decode(str(value)))
        keys = [
            part.thread(thread_id),
            part.view(thread_id),
            part.summaries,
            part.threads,
            part.active,
            part.queue(thread_id),
            part.access(thread_id),
            part.timers,
            part.runs,
            part.runs_by_time,
            part.runs_ended,
            part.search_doc(thread_id),
            part.compact,
            *(part.runs_with_status(status) for status in STATUSES),
            *(part.run(run_id) for run_id in runs),
            *(part.users_threads(user) for user in sorted(users)),
            *dedupes,
            *(part.search_word(word) for word in sorted(words)),
        ]
        args = [
            thread_id,
            last or "",
            "" if view_last is None else str(view_last),
            str(len(STATUSES)),
            str(len(runs)),
            str(len(users)),
            str(len(dedupes)),
            part.cancels,
            *runs,
        ]
        return str(await self._script(keys=keys, args=args))

    async def _history(self, thread_id: str) -> tuple[str | None, list[str], set[str]]:
        """The stream's last id, the thread's run ids and its messages' client ids: from
        the view brought up to the stream's end, or, for a thread whose events do not
        fold, from the events themselves (such a thread can be deleted too)."""
        try:
            view = await self.views.current(thread_id)
        except FoldFailed:
            stored = await self.store.read(thread_id)
            runs = [s.event.run_id for s in stored if isinstance(s.event, ev.RunRequested)]
            clients = {
                s.event.client_id
                for s in stored
                if isinstance(s.event, ev.MessageSent) and s.event.client_id
            }
            return (stored[-1].id if stored else None), list(dict.fromkeys(runs)), clients
        clients = {m.client_id for m in view.messages if m.client_id}
        return view.last_event_id, list(view.runs), clients

    async def _sweep(self, stream: str, thread_id: str, *, group: str | None = None) -> None:
        """Remove the thread's entries from a partition stream (its work, its dead letters)."""
        start = "-"
        while True:
            page = cast(list[Entry], await self.redis.xrange(stream, start, "+", count=SWEEP_PAGE))
            ids = [entry_id for entry_id, fields in page if fields.get("thread") == thread_id]
            if ids:
                if group is not None:
                    with contextlib.suppress(ResponseError):  # NOGROUP: no worker made it yet
                        await self.redis.xack(stream, group, *ids)
                await self.redis.xdel(stream, *ids)
            if len(page) < SWEEP_PAGE:
                return
            start = f"({page[-1][0]}"
