"""Replay: rebuild a thread's stored views from its stream and say where they differ.

What is compared is what the store script writes for the thread (store_view.lua):
every field of the view hash, the thread's entry in the summaries hash and the
entries the run summaries hash still holds for the thread's runs (retention may
have trimmed some: a missing one is no difference). The rebuild folds the
stream only up to the stored view's `last`, so a projector that lags behind the
stream is no difference either; a thread with no stored view is compared with
the whole stream (every field then differs: the view is missing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from projections.thread_view import SCHEMA_VERSION, ThreadView, fold_into
from projections.view_layout import encode
from slipstream import codec, errors
from slipstream.backend import stream_pages
from slipstream.store import EventStore, Stored

Where = Literal["view", "summary", "run"]
READS = 5  # reads of the stored view when its runs keep changing under the read


@dataclass(frozen=True)
class Difference:
    """One stored value that is not what the rebuild writes (None: absent on that side)."""

    where: Where  # the view hash, the summaries hash, or the run summaries hash
    field: str  # the view's field name, the thread id, or the run id
    stored: str | None
    rebuilt: str | None


@dataclass
class Replayed:
    """A replay's outcome: no differences means the stored views equal the rebuild."""

    thread_id: str
    last: str | None  # the stream position compared at (the stored view's, else the stream's end)
    events: int  # events folded into the rebuild
    differences: list[Difference] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.differences


@dataclass(frozen=True)
class _Stored:
    fields: dict[str, str]
    summary: str | None
    runs: dict[str, str | None]


async def replay(store: EventStore, thread_id: str) -> Replayed:
    """Rebuild `thread_id`'s views from its stream and diff them with the stored ones.

    ThreadNotFound if the thread has neither a stream nor a stored view.
    """
    stored = await _read_stored(store, thread_id)
    last = stored.fields.get("last") or None
    if not stored.fields and not await store.exists(thread_id):
        raise errors.ThreadNotFound(thread_id)
    view = ThreadView.empty(thread_id, store.stream_key(thread_id))
    await _fold_until(store, view, last)
    rebuilt_fields = _view_fields(view)
    result = Replayed(thread_id, last or view.last_event_id, view.version)
    if not stored.fields:
        # No stored view: only its absence is worth reporting, not every field of it.
        result.differences.append(Difference("view", "last", None, view.last_event_id))
        return result
    for name in sorted(set(stored.fields) | set(rebuilt_fields), key=_field_order):
        have, want = stored.fields.get(name), rebuilt_fields.get(name)
        if have != want:
            result.differences.append(Difference("view", name, have, want))
    summary = view.summary().model_dump_json()
    if stored.summary != summary:
        result.differences.append(Difference("summary", thread_id, stored.summary, summary))
    for run in view.runs.values():
        held = stored.runs.get(run.id)
        want = view.run_summary(run).model_dump_json()
        if held is not None and held != want:
            result.differences.append(Difference("run", run.id, held, want))
    return result


def _view_fields(view: ThreadView) -> dict[str, str]:
    """The view hash as a save that rewrites it whole writes it."""
    pairs, _ = encode(view, {}, None)
    fields = dict(zip(pairs[::2], pairs[1::2], strict=True))
    fields["schema"] = str(SCHEMA_VERSION)
    if view.last_event_id is not None:
        fields["last"] = view.last_event_id
    return fields


def _field_order(name: str) -> tuple[int, int, str]:
    """last, schema, meta, then messages and runs by number."""
    kind, _, number = name.partition(":")
    rank = {"last": 0, "schema": 1, "meta": 2, "m": 3, "r": 4}.get(kind, 5)
    return rank, int(number) if number.isdigit() else -1, name


async def _read_stored(store: EventStore, thread_id: str) -> _Stored:
    """The view hash, the thread's summary and its runs' summaries, read in one MULTI
    (the store script writes them together, so what is read is one save's)."""
    part = store.keys.partition(thread_id)
    run_ids: list[str] = []
    for _ in range(READS):
        async with store.backend.pipeline_for(part.view(thread_id)) as pipe:
            pipe.hgetall(part.view(thread_id))
            pipe.hget(part.summaries, thread_id)
            if run_ids:
                pipe.hmget(part.runs, run_ids)
            replies = await pipe.execute()
        fields = {str(name): str(value) for name, value in replies[0].items()}
        found = _run_ids(fields)
        if set(found) <= set(run_ids) or not found:
            held = replies[2] if run_ids else []
            runs = {
                run_id: None if value is None else str(value)
                for run_id, value in zip(run_ids, held, strict=True)
            }
            return _Stored(fields, None if replies[1] is None else str(replies[1]), runs)
        run_ids = found  # the view names runs not read yet: read again with them
    raise RuntimeError(f"thread {thread_id}: its view kept changing while it was read")


def _run_ids(fields: dict[str, str]) -> list[str]:
    """The ids of the runs a stored view holds (a field that does not parse names none)."""
    found: list[str] = []
    for name, raw in fields.items():
        if not name.startswith("r:"):
            continue
        try:
            run_id = json.loads(raw).get("id")
        except (ValueError, AttributeError):
            continue
        if isinstance(run_id, str):
            found.append(run_id)
    return found


async def _fold_until(store: EventStore, view: ThreadView, last: str | None) -> None:
    """Fold the thread's events up to `last` (inclusive; None: to the end) into `view`,
    a page at a time: a long thread is never held whole."""
    key = store.stream_key(view.id)
    async for page in stream_pages(store.redis, key, end=last or "+", count=store.read_page):
        fold_into(view, [Stored(i, codec.decode(key, i, fields)) for i, fields in page])
