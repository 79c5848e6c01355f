"""The event store: guarded, idempotent appends and reads of thread streams.

Every append is one call of ``lua/append.lua``: it checks the guards, then
adds the events to the thread stream and the partition feed (and a work item
where one is asked for), atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal, cast

from redis.commands.core import AsyncScript

from slipstream import codec, errors
from slipstream.backend import Backend, as_entries, stream_pages
from slipstream.batching import ScriptBatch
from slipstream.codec import Unreadable
from slipstream.config import Settings
from slipstream.events import Event, new_event_id
from slipstream.keys import Keyspace, is_valid_id, thread_of_run
from slipstream.replicas import ReplicaWait, wants_replicas
from slipstream.scripts import ScriptCalls

Existence = Literal["new", "exists", "any"]

# Entries per XRANGE of a whole-thread read: 2,000 delta-sized entries take about 70 ms.
READ_PAGE = 2_000
# Calls of the append script to name the runs it touches: each names those it found
# missing, so a second call nearly always has them all (a third when a queued run's
# lane has a holder of its own).
RUN_KEY_ROUNDS = 8

_APPEND_LUA = resources.files("slipstream").joinpath("lua/append.lua").read_text()


@dataclass(frozen=True)
class Fence:
    run_id: str
    token: int


Admit = Literal["queue", "interrupt", "reject"]


@dataclass(frozen=True)
class Append:
    """One batch for one thread, with the guards it must pass and its side effects."""

    thread_id: str
    events: Sequence[Event]
    existence: Existence = "exists"
    expected_version: int | None = None
    run_id: str | None = None
    fence: int | None = None
    refuse_if_cancelled: bool = False
    refuse_if_finished: bool = False
    expect_status: Sequence[str] = ()
    # Remember the batch for the store's resend window under `dedupe_key` (by
    # default its first event id), so a resend writes nothing; `reply` is kept
    # with it and given back to the resend.
    dedupe: bool = False
    dedupe_key: str | None = None
    reply: str | None = None
    batch_id: str | None = None
    run_fields: Mapping[str, str] = field(default_factory=dict)
    work: bool = False  # admit the run: a work item now, or a place in the thread's queue
    admit: Admit = "queue"
    # With `work`: more runs of the thread, as (run id, agent), admitted in the same
    # call, each in its own agent's lane, with `run_fields` but its own agent.
    more_runs: Sequence[tuple[str, str]] = ()
    refuse_if_queue_full: bool = False  # QueueFull rather than queue past the store's bound
    interrupt_event_id: str = ""
    ack: str | None = None
    timer_at_ms: int | None = None
    release_thread: bool = False
    wake_if_waiting_for: str | None = None
    signals_seen: tuple[str, int] | None = None
    dead_letter: str | None = None
    announce_cancel: bool = False
    # Who may use the thread (service/access.py), changed in the same call as its events:
    # ("owner" | "add" | "remove", user).
    access: tuple[str, str] | None = None


@dataclass(frozen=True)
class Appended:
    ids: list[str]
    version: int
    duplicate: bool
    reply: str = ""  # on a duplicate, what the first call kept with its dedupe key


@dataclass(frozen=True)
class Stored:
    """An event as read back, with its position (the thread stream id)."""

    id: str
    event: Event | Unreadable


class EventStore:
    """Appends and reads; the bounds are those of `Settings` (the defaults are theirs)."""

    read_page = READ_PAGE

    def __init__(
        self,
        backend: Backend,
        keyspace: Keyspace,
        *,
        feed_maxlen: int = 100_000,
        dedupe_window_ms: int = 24 * 3600 * 1000,
        run_retention_ms: int = 7 * 24 * 3600 * 1000,
        dead_maxlen: int = 10_000,
        queue_max: int = 100,
        wait_replicas: int = 0,
        wait_ms: int = 100,
    ):
        self.backend = backend
        self.redis = backend.client
        self.keys = keyspace
        self.feed_maxlen = feed_maxlen
        self.dedupe_window_ms = dedupe_window_ms
        self.run_retention_ms = run_retention_ms
        self.dead_maxlen = dead_maxlen
        self.queue_max = queue_max
        # Appends that answer a promise wait for this many replicas (slipstream/replicas.py).
        self.replica_wait = ReplicaWait(wait_replicas, wait_ms)
        self._append: AsyncScript = self.redis.register_script(_APPEND_LUA)
        # Appends of many tasks at once go out together (and a worker's claims with them).
        self.batch = ScriptBatch(backend)

    @classmethod
    def from_settings(cls, backend: Backend, settings: Settings) -> EventStore:
        return cls(
            backend,
            Keyspace(settings.partitions),
            feed_maxlen=settings.feed_maxlen,
            dedupe_window_ms=settings.dedupe_window_s * 1000,
            run_retention_ms=settings.run_retention_s * 1000,
            dead_maxlen=settings.dead_maxlen,
            queue_max=settings.queue_max,
            wait_replicas=settings.replicas_to_wait(backend.cluster),
            wait_ms=settings.wait_ms,
        )

    def stream_key(self, thread_id: str) -> str:
        return self.keys.partition(thread_id).thread(thread_id)

    def _call(self, request: Append, runs: Sequence[str] = ()) -> tuple[list[str], list[str]]:
        """The script's keys and arguments; `runs`: other runs whose hashes it is given."""
        _check_more_runs(request)
        part = self.keys.partition(request.thread_id)
        run_id = request.run_id or ""
        first = request.dedupe_key or (request.events[0].event_id if request.events else "-")
        keys = [
            part.thread(request.thread_id),
            part.feed,
            part.work,
            part.run(run_id or "-"),
            part.dedupe(first),
            part.threads,
            part.active,
            part.queue(request.thread_id),
            part.timers,
            part.dead,
            part.access(request.thread_id),
            part.users_threads(request.access[1] if request.access else "-"),
            *(part.run(other) for other in runs),
        ]
        options: dict[str, str] = {
            "existence": request.existence,
            "feed_maxlen": str(self.feed_maxlen),
        }
        if request.run_id:
            options["retention_ms"] = str(self.run_retention_ms)
        if request.expected_version is not None:
            options["expected_version"] = str(request.expected_version)
        if request.fence is not None:
            options["fence"] = str(request.fence)
        if request.refuse_if_cancelled:
            options["refuse_cancelled"] = "1"
        if request.refuse_if_finished:
            options["refuse_finished"] = "1"
        if request.expect_status:
            options["expect_status"] = ",".join(request.expect_status)
        if request.dedupe:
            options["dedupe_ms"] = str(self.dedupe_window_ms)
            if request.reply is not None:
                options["reply"] = request.reply
        if request.batch_id:
            options["batch_id"] = request.batch_id
        if request.work:
            options["work"] = "1"
            options["admit"] = request.admit
            options["interrupt_eid"] = request.interrupt_event_id or new_event_id()
            if request.refuse_if_queue_full:
                options["queue_max"] = str(self.queue_max)
            if request.more_runs:
                options["more_runs"] = ",".join(f"{r}={agent}" for r, agent in request.more_runs)
        if request.ack:
            options["ack"] = request.ack
        if request.timer_at_ms is not None:
            options["timer_at"] = str(request.timer_at_ms)
        if request.release_thread:
            options["release_thread"] = "1"
        if request.wake_if_waiting_for is not None:
            options["wake_if_waiting_for"] = request.wake_if_waiting_for
        if request.signals_seen is not None:
            options["signals_seen"] = f"{request.signals_seen[0]}:{request.signals_seen[1]}"
        if request.dead_letter is not None:
            options["dead"] = request.dead_letter
            options["dead_maxlen"] = str(self.dead_maxlen)
        if request.announce_cancel or (request.work and request.admit == "interrupt"):
            options["publish"] = part.cancels
        if request.access is not None:
            options[f"access_{request.access[0]}"] = request.access[1]
        for name, value in request.run_fields.items():
            options[f"run.{name}"] = value
        if runs:
            options["runs"] = ",".join(runs)
        args: list[str] = [request.thread_id, run_id, str(len(options))]
        for name, value in options.items():
            args += (name, value)
        args.append(str(len(request.events)))
        for event in request.events:
            entry = codec.encode(event)
            args.append(str(2 * len(entry)))
            for name, value in entry.items():
                args += (name, value)
        return keys, args

    async def append(self, request: Append) -> Appended:
        if (request.fence is not None or request.refuse_if_cancelled) and not request.run_id:
            raise ValueError("a fenced or cancel-guarded append needs run_id")
        reply = await self._append_with_runs(request, _runs_named(request), None)
        self.backend.appended()
        return _result(request, reply)

    async def _append_with_runs(
        self, request: Append, runs: list[str], reply: list[str | int] | None
    ) -> list[str | int]:
        """Call the script (unless `reply` is its answer already) until it has the hash of
        every run it touches: it names those it lacks, and writes nothing until then."""
        for _ in range(RUN_KEY_ROUNDS):
            if reply is None:
                keys, args = self._call(request, runs)
                reply = await self._call_script(request, keys, args)
            if str(reply[0]) != "KEYS":
                return reply
            runs = runs + [str(other) for other in reply[1:] if str(other) not in runs]
            reply = None
        raise RuntimeError(
            f"append to {request.thread_id}: its runs kept changing while their keys were named"
        )

    async def _call_script(
        self, request: Append, keys: list[str], args: list[str]
    ) -> list[str | int]:
        if self.replica_wait.replicas and wants_replicas(request.events):
            reply = await self.replica_wait.append(self.backend, self._append, keys, args)
        else:
            # A run's appends one at a time: a resent batch must not run one of them again
            # after another of the same run (its batch id is known only as the run's last).
            reply = await self.batch.call(
                self._append, keys, args, one_at_a_time=keys[3] if request.run_id else None
            )
        return cast(list[str | int], reply)

    async def append_many(
        self, requests: Sequence[Append]
    ) -> list[Appended | errors.SlipstreamError]:
        """Pipeline several appends: one round trip, each still atomic on its own."""
        calls = ScriptCalls(self.redis)  # a cluster's nodes may lack the script
        async with self.redis.pipeline(transaction=False) as pipe:
            for request in requests:
                keys, args = self._call(request, _runs_named(request))
                await calls.queue(pipe, self._append, keys=keys, args=args)
            replies = await calls.execute(pipe)
        self.backend.appended()
        results: list[Appended | errors.SlipstreamError] = []
        for request, reply in zip(requests, replies, strict=True):
            # One that must name more runs' hashes wrote nothing: it is written now, after
            # the others.
            reply = await self._append_with_runs(request, _runs_named(request), reply)
            try:
                results.append(_result(request, reply))
            except errors.SlipstreamError as exc:
                results.append(exc)
        self.backend.appended()  # those written after the others too
        return results

    async def read(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        start: str | None = None,
        count: int | None = None,
    ) -> list[Stored]:
        """Events after `after` (exclusive) or from `start` (inclusive), in order.

        Without `count`, the whole rest of the stream, read in pages of
        `read_page`: one XRANGE of a long thread would outlast the command timeout.
        """
        key = self.stream_key(thread_id)
        start = f"({after}" if after else start or "-"
        if count is not None:
            entries = as_entries(await self.redis.xrange(key, start, "+", count=count))
        else:
            entries = []
            async for page in stream_pages(self.redis, key, start=start, count=self.read_page):
                entries += page
        return [
            Stored(entry_id, codec.decode(key, entry_id, fields)) for entry_id, fields in entries
        ]

    async def version(self, thread_id: str) -> int:
        return int(await self.redis.xlen(self.stream_key(thread_id)))

    async def exists(self, thread_id: str) -> bool:
        return bool(await self.redis.exists(self.stream_key(thread_id)))

    async def recall(self, thread_id: str, dedupe_key: str) -> str | None:
        """The reply a deduplicated call kept under `dedupe_key`, if it is still remembered."""
        value = await self.redis.get(self.keys.partition(thread_id).dedupe(dedupe_key))
        if value is None:
            return None
        return str(value).partition("\n")[2]

    async def remembered_ids(self, thread_id: str, dedupe_key: str) -> list[str] | None:
        """The ids a deduplicated append wrote under `dedupe_key`, if it is still remembered."""
        value = await self.redis.get(self.keys.partition(thread_id).dedupe(dedupe_key))
        if value is None:
            return None
        written = str(value).partition("\n")[0]
        return written.split(",") if written else []

    async def remember(self, thread_id: str, dedupe_key: str, reply: str) -> str:
        """Keep a reply for a call that wrote no events; the first one kept wins and is returned."""
        key = self.keys.partition(thread_id).dedupe(dedupe_key)
        if await self.redis.set(key, "\n" + reply, nx=True, px=self.dedupe_window_ms):
            return reply
        return await self.recall(thread_id, dedupe_key) or reply

    async def run_state(self, run_id: str, thread_id: str) -> dict[str, str]:
        key = self.keys.partition(thread_id).run(run_id)
        state = await self.redis.hgetall(key)
        return {str(k): str(v) for k, v in state.items()}


def _runs_named(request: Append) -> list[str]:
    """The other runs a call is known to touch before it looks: those it admits."""
    return [run_id for run_id, _ in request.more_runs]


def _check_more_runs(request: Append) -> None:
    """More runs must be the thread's (their hashes share its slot) and admitted with work."""
    if not request.more_runs:
        return
    if not (request.work and request.run_id):
        raise ValueError("more_runs are admitted with work=True and a run_id")
    for run_id, agent in request.more_runs:
        if thread_of_run(run_id) != request.thread_id or not is_valid_id(agent):
            raise ValueError(f"more_runs: {run_id!r}={agent!r} is not a run of this thread")


def _result(request: Append, reply: list[str | int]) -> Appended:
    code = str(reply[0])
    if code in ("OK", "DUP"):
        return Appended(
            ids=[str(i) for i in reply[3:]],
            version=int(reply[1]),
            duplicate=code == "DUP",
            reply=str(reply[2]),
        )
    detail = str(reply[1]) if len(reply) > 1 else ""
    run_id = request.run_id or ""
    if code == "NOTHREAD":
        raise errors.ThreadNotFound(request.thread_id)
    if code == "EXISTS":
        raise errors.ThreadExists(request.thread_id)
    if code == "CONFLICT":
        raise errors.VersionConflict(request.thread_id, request.expected_version or 0, int(detail))
    if code == "NORUN":
        raise errors.RunNotFound(run_id)
    if code == "STALE":
        raise errors.StaleFence(run_id, request.fence or 0)
    if code == "CANCELLED":
        raise errors.RunCancelled(run_id)
    if code == "FINISHED":
        raise errors.RunFinished(run_id, detail)
    if code == "STATUS":
        raise errors.RunStatusChanged(run_id, detail)
    if code == "BUSY":
        raise errors.ThreadBusy(request.thread_id, detail)
    if code == "QUEUEFULL":
        raise errors.QueueFull(request.thread_id, int(detail))
    raise RuntimeError(f"append script replied {reply!r}")
