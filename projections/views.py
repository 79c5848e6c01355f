"""Stored thread views: load, catch up from the stream, save with a checkpoint."""

from __future__ import annotations

import heapq
from pathlib import Path

import orjson

from projections.thread_view import RunSummary, ThreadSummary, ThreadView, fold
from slipstream.store import EventStore

_STORE_LUA = (Path(__file__).parent / "store_view.lua").read_text()


class ViewStore:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self._store = self.redis.register_script(_STORE_LUA)

    async def load(self, thread_id: str) -> ThreadView | None:
        raw = await self.redis.hget(self.keys.partition(thread_id).view(thread_id), "view")
        return ThreadView.model_validate_json(raw) if raw else None

    async def current(self, thread_id: str) -> ThreadView:
        """The stored view brought up to the stream's end: fresh even if projectors lag."""
        view = await self.load(thread_id)
        if view is None:
            view = ThreadView.empty(thread_id, self.store.stream_key(thread_id))
        missing = await self.store.read(thread_id, after=view.last_event_id)
        return fold(view, missing) if missing else view

    async def save(self, view: ThreadView, expected_last: str | None) -> bool:
        part = self.keys.partition(view.id)
        runs: list[str] = []
        for run in view.run_summaries():
            runs += (run.id, run.model_dump_json())
        stored = await self._store(
            keys=[part.view(view.id), part.summaries, part.runs],
            args=[
                expected_last or "",
                view.last_event_id or "",
                view.model_dump_json(),
                view.id,
                view.summary().model_dump_json(),
                *runs,
            ],
        )
        return bool(stored)

    async def runs(
        self, *, status: str | None = None, agent: str | None = None, limit: int = 100
    ) -> list[RunSummary]:
        """Runs as the projector last saw them, newest first, across partitions."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in self.keys.all():
                pipe.hvals(part.runs)
            replies = await pipe.execute()
        found = [RunSummary.model_validate_json(raw) for reply in replies for raw in reply]
        chosen = [
            run
            for run in found
            if (status is None or run.status == status) and (agent is None or run.agent == agent)
        ]
        chosen.sort(key=lambda run: run.requested_at, reverse=True)
        return chosen[:limit]

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
        ids = [thread_id for thread_id, _ in newest]
        async with self.redis.pipeline(transaction=False) as pipe:
            for thread_id in ids:
                pipe.hget(self.keys.partition(thread_id).summaries, thread_id)
            raws = await pipe.execute()
        result: list[ThreadSummary] = []
        for (thread_id, score), raw in zip(newest, raws, strict=True):
            if raw:
                summary = ThreadSummary.model_validate(orjson.loads(raw))
            else:
                # Not projected yet: build it from the stream so a new thread shows at once.
                summary = (await self.current(thread_id)).summary()
            summary.updated_at = max(summary.updated_at, int(score))
            result.append(summary)
        return result
