"""Export a thread as JSON lines, and import it into another deployment.

An export is three kinds of line, each a JSON object:

    {"kind": "thread", "format": 1, "thread": ID, "activity_ms": n,
     "access": {field: value}, "indexed": {user: joined ms},
     "runs": {run id: {"state": {field: value}, "ttl_ms": n | null}}}
    {"kind": "event", "id": STREAM ID, "fields": {field: value}}     (one per entry)
    {"kind": "end", "events": n, "last": STREAM ID}

The events are the thread stream's entries as they are (their ids are the
views' positions, so they are kept); with `access` (owner and members), the
users' thread indexes and the run hashes, the thread is whole and usable in the
target. The import writes the entries to a staging stream of its own in
bounded batches, then in one script renames it to the thread stream (refused
if the thread exists there) with the thread's keys, and folds its views at
once (ViewStore.reindex: the view hash, summary, run index and search index),
rather than through the feed: its events are not new, and no live reader or
projector needs to see them go by. Entries a compaction removed are simply
absent: the fold gives the same views without them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from projections.views import TERMINAL, ViewStore
from slipstream import errors
from slipstream import events as ev
from slipstream.backend import Entry, stream_pages
from slipstream.codec import Unreadable, decode
from slipstream.keys import is_stream_id, is_valid_id, stream_id_tuple, thread_of_run
from slipstream.store import EventStore

FORMAT = 1
STAGE_BATCH = 500  # entries per staging call
USER_CHARS = 256  # a user name, as the header auth mode may bring any
# An event is written with 6 fields at most (slipstream/codec.py); the import's script
# spreads an entry's fields with unpack(), which fails past ~8,000, half-way through a batch.
ENTRY_FIELDS = 32
MAX_MS = 2**53 - 1  # exact as a sorted set's score; PEXPIRE takes it from any now
STAGE_TTL_MS = 3_600_000  # an import that stops half-way leaves nothing after an hour

_IMPORT_LUA = resources.files("slipstream").joinpath("lua/import_thread.lua").read_text()


class TransferError(Exception):
    """An export or import that cannot be done, with what to do about it."""


@dataclass(frozen=True)
class Imported:
    thread: str
    events: int
    runs: int
    last: str
    view_saved: bool


async def export_thread(store: EventStore, thread_id: str) -> list[dict[str, Any]]:
    """The thread as export records (the module's docstring has their form)."""
    part = store.keys.partition(thread_id)
    redis = store.redis
    entries: list[Entry] = []
    async for page in stream_pages(redis, part.thread(thread_id), count=store.read_page):
        entries += page
    if not entries:
        raise errors.ThreadNotFound(thread_id)
    key = part.thread(thread_id)
    run_ids = list(
        dict.fromkeys(
            event.run_id
            for event in (decode(key, i, f) for i, f in entries)
            if isinstance(event, ev.RunRequested)
        )
    )
    access = {str(k): str(v) for k, v in (await redis.hgetall(part.access(thread_id))).items()}
    users = [access["owner"]] if access.get("owner") else []
    users += [name[2:] for name in access if name.startswith("m:")]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zscore(part.threads, thread_id)
        for user in users:
            pipe.zscore(part.users_threads(user), thread_id)
        for run_id in run_ids:
            pipe.hgetall(part.run(run_id))
            pipe.pttl(part.run(run_id))
        replies = await pipe.execute()
    activity, indexed, rest = replies[0], replies[1 : 1 + len(users)], replies[1 + len(users) :]
    runs: dict[str, dict[str, Any]] = {}
    for n, run_id in enumerate(run_ids):
        state, ttl = rest[2 * n], int(rest[2 * n + 1])
        if not state:
            continue  # expired: the run ended long ago, its view keeps what it was
        status = str(state.get("status"))
        if status not in TERMINAL:
            raise TransferError(
                f"thread {thread_id} has a run not finished ({run_id} is {status}): wait for "
                "it to end or cancel it, then export again (imported, nothing would run it)"
            )
        runs[run_id] = {
            "state": {str(k): str(v) for k, v in state.items()},
            "ttl_ms": ttl if ttl >= 0 else None,
        }
    header = {
        "kind": "thread",
        "format": FORMAT,
        "thread": thread_id,
        "activity_ms": int(activity)
        if activity is not None
        else stream_id_tuple(entries[-1][0])[0],
        "access": access,
        "indexed": {
            user: int(score)
            for user, score in zip(users, indexed, strict=True)
            if score is not None
        },
        "runs": runs,
    }
    events = [{"kind": "event", "id": i, "fields": dict(f)} for i, f in entries]
    end = {"kind": "end", "events": len(entries), "last": entries[-1][0]}
    return [header, *events, end]


@dataclass(frozen=True)
class _Parsed:
    thread: str
    header: dict[str, Any]
    entries: list[tuple[str, dict[str, str]]]


def parse(records: Iterable[Any]) -> _Parsed:
    """Check an export's records (line numbers from 1 in what is wrong)."""
    header: dict[str, Any] | None = None
    entries: list[tuple[str, dict[str, str]]] = []
    ended = False
    for line, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise TransferError(f"line {line}: not a JSON object")
        kind = record.get("kind")
        if ended:
            raise TransferError(f"line {line}: more after the end line")
        if header is None:
            if kind != "thread" or record.get("format") != FORMAT:
                raise TransferError(
                    f"line {line}: not the start of a thread export of format {FORMAT}"
                )
            if not isinstance(record.get("thread"), str) or not is_valid_id(record["thread"]):
                raise TransferError(f"line {line}: no valid thread id")
            _check_header(record, line)
            header = record
        elif kind == "event":
            entry_id, fields = record.get("id"), record.get("fields")
            if not isinstance(entry_id, str) or not is_stream_id(entry_id):
                raise TransferError(f"line {line}: not a stream entry id: {entry_id!r}")
            if (
                not isinstance(fields, dict)
                or not fields
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
            ):
                raise TransferError(f"line {line}: fields are not a map of strings")
            if entries and stream_id_tuple(entry_id) <= stream_id_tuple(entries[-1][0]):
                raise TransferError(f"line {line}: entry {entry_id} is not after the one before")
            _check_event(header["thread"], entry_id, fields, line)
            entries.append((entry_id, fields))
        elif kind == "end":
            if record.get("events") != len(entries) or (
                entries and record.get("last") != entries[-1][0]
            ):
                raise TransferError(
                    f"line {line}: the end line counts {record.get('events')} events, "
                    f"but {len(entries)} came before it"
                )
            ended = True
        else:
            raise TransferError(f"line {line}: unknown kind {kind!r}")
    if header is None:
        raise TransferError("no input: pipe in what `python -m service export THREAD` wrote")
    if not ended:
        raise TransferError("the input stops before its end line: it is cut short")
    if not entries:
        raise TransferError("the export holds no events")
    return _Parsed(header["thread"], header, entries)


def _check_event(thread_id: str, entry_id: str, fields: dict[str, str], line: int) -> None:
    """An entry is an event this code reads, of this thread's own runs: the fold writes
    each run it names into the partition's run indexes, so another thread's run id
    would overwrite that run's summary there."""
    if len(fields) > ENTRY_FIELDS:
        raise TransferError(
            f"line {line}: {len(fields)} fields, an event has {ENTRY_FIELDS} at most"
        )
    event = decode(f"import:{thread_id}", entry_id, fields)
    if isinstance(event, Unreadable):
        raise TransferError(
            f"line {line}: entry {entry_id} does not read as an event: {event.reason}"
        )
    run_id = getattr(event, "run_id", None)
    if run_id is not None and thread_of_run(run_id) != thread_id:
        raise TransferError(f"line {line}: {run_id!r} is not a run of thread {thread_id}")


def _check_header(record: dict[str, Any], line: int) -> None:
    thread_id = record["thread"]
    strings = record.get("access")
    if not isinstance(strings, dict) or not all(isinstance(v, str) for v in strings.values()):
        raise TransferError(f"line {line}: access is not a map of strings")
    indexed = record.get("indexed")
    if not isinstance(indexed, dict) or not all(
        0 < len(user) <= USER_CHARS and _is_ms(ms) for user, ms in indexed.items()
    ):
        raise TransferError(f"line {line}: indexed is not a map of users to times")
    # Only the thread's own users' lists: a stranger's would show a thread they cannot open.
    users = {strings.get("owner")} | {name[2:] for name in strings if name.startswith("m:")}
    if strangers := sorted(set(indexed) - users):
        raise TransferError(
            f"line {line}: indexed names {strangers[0]!r}, not the owner or a member in access"
        )
    runs = record.get("runs")
    if not isinstance(runs, dict):
        raise TransferError(f"line {line}: runs is not a map")
    for run_id, run in runs.items():
        if not isinstance(run_id, str) or thread_of_run(run_id) != thread_id:
            raise TransferError(f"line {line}: {run_id!r} is not a run of thread {thread_id}")
        state = run.get("state") if isinstance(run, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, str) for v in state.values()):
            raise TransferError(f"line {line}: run {run_id}'s state is not a map of strings")
        if state.get("status") not in TERMINAL:
            # As export refuses: imported, nothing would run it, and a signal or a timer
            # could put a hash the file made up to work (an approval wakes a waiting run).
            raise TransferError(
                f"line {line}: run {run_id} is not finished ({state.get('status')})"
            )
        if not (run.get("ttl_ms") is None or _is_ms(run.get("ttl_ms"))):
            raise TransferError(f"line {line}: run {run_id}'s ttl_ms is not a number of ms")
    if not _is_ms(record.get("activity_ms")):
        raise TransferError(f"line {line}: activity_ms is not a number of ms")


def _is_ms(value: Any) -> bool:
    """A time or a lifetime in ms that Redis takes as a score and an expiry: the finishing
    script refuses nothing after its rename, which would leave the thread half-written."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_MS


async def import_thread(store: EventStore, views: ViewStore, records: Iterable[Any]) -> Imported:
    """Write an export into this deployment and fold its views; ThreadExists if it is here."""
    parsed = parse(records)
    thread_id, header = parsed.thread, parsed.header
    part = store.keys.partition(thread_id)
    script = store.redis.register_script(_IMPORT_LUA)
    staging = part.key("import", thread_id, secrets.token_hex(8))
    last = ""
    for start in range(0, len(parsed.entries), STAGE_BATCH):
        args: list[str | int] = ["stage", last, STAGE_TTL_MS, 0]
        batch = parsed.entries[start : start + STAGE_BATCH]
        args[3] = len(batch)
        for entry_id, fields in batch:
            args += [entry_id, 2 * len(fields)]
            for name, value in fields.items():
                args += [name, value]
        reply = await script(keys=[part.thread(thread_id), staging], args=args)
        _check(reply, thread_id)
        last = str(reply[1])
    access: dict[str, str] = header["access"]
    users: dict[str, int] = header["indexed"]
    runs: dict[str, dict[str, Any]] = header["runs"]
    finish: list[str | int] = ["finish", last, thread_id, header["activity_ms"], len(access)]
    for name, value in access.items():
        finish += [name, value]
    finish.append(len(users))
    finish += list(users.values())
    finish.append(len(runs))
    for run in runs.values():
        finish.append(len(run["state"]))
        for name, value in run["state"].items():
            finish += [name, value]
        finish.append("" if run["ttl_ms"] is None else run["ttl_ms"])
    reply = await script(
        keys=[
            part.thread(thread_id),
            staging,
            part.view(thread_id),
            part.access(thread_id),
            part.threads,
            part.compact,
            *(part.users_threads(user) for user in users),
            *(part.run(run_id) for run_id in runs),
        ],
        args=finish,
    )
    _check(reply, thread_id)
    saved = await views.reindex(thread_id)
    return Imported(thread_id, len(parsed.entries), len(runs), parsed.entries[-1][0], saved)


def _check(reply: list[Any], thread_id: str) -> None:
    outcome = str(reply[0])
    if outcome == "EXISTS":
        raise errors.ThreadExists(thread_id)
    if outcome == "MOVED":
        raise TransferError(
            f"the staging stream of thread {thread_id} changed under the import (it expired "
            f"after {STAGE_TTL_MS // 60_000} min, or another call wrote to it): import again"
        )
