"""Every Redis key Slipstream uses, in one place.

All keys of a partition share the hash tag ``{pNN}``, so one Lua script can
touch them atomically and Redis Cluster keeps them on one node.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib
from dataclasses import dataclass

PREFIX = "ss"
WORKERS_GROUP = "workers"
WORKER_REGISTRY = f"{PREFIX}:workers"  # sorted set: worker name -> last seen (ms)
PROJECTORS_GROUP = "projectors"
PROJECTOR_REGISTRY = f"{PREFIX}:projectors"  # sorted set: projector name -> last seen (ms)

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RUN_ID = re.compile(r"^([A-Za-z0-9_-]{1,64})\.([a-f0-9]{6,32})$")
# 19 digits at most: every such number fits the 64 bits Redis takes (20 may not).
STREAM_ID = re.compile(r"^\d{1,19}-\d{1,19}$")


def new_thread_id() -> str:
    return "t" + secrets.token_hex(8)


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)


RUN_ID_HEX = 16  # 64 random bits; ids made before had 12 hex digits, and still parse


def new_run_id(thread_id: str) -> str:
    """Run ids carry their thread, so any process can find the run's partition."""
    return f"{thread_id}.{secrets.token_hex(RUN_ID_HEX // 2)}"


def derived_hex(*parts: str, digits: int = 16) -> str:
    """`digits` hex digits (64 bits by default) hashed from `parts`: the same in every process.

    For ids a retry must reproduce (a resend's run, a workflow turn's message);
    every part counts, each with its length, so no two lists of parts collide.
    """
    named = "".join(f"{len(part)}:{part}" for part in parts)
    return hashlib.blake2b(named.encode(), digest_size=digits // 2).hexdigest()


def is_valid_id(value: str) -> bool:
    return bool(_ID.match(value))


def thread_of_run(run_id: str) -> str | None:
    match = _RUN_ID.match(run_id)
    return match.group(1) if match else None


def is_stream_id(value: str) -> bool:
    """`<ms>-<seq>`, each part a number Redis takes (64 bits)."""
    return bool(STREAM_ID.match(value))


def stream_id_tuple(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def partition_of(thread_id: str, partitions: int) -> int:
    # crc32, not hash(): it must agree across processes and Python versions.
    return zlib.crc32(thread_id.encode()) % partitions


@dataclass(frozen=True)
class Partition:
    number: int

    @property
    def tag(self) -> str:
        return f"{{p{self.number:02d}}}"

    def key(self, *parts: str) -> str:
        return ":".join((PREFIX, self.tag, *parts))

    @property
    def feed(self) -> str:
        return self.key("feed")

    @property
    def work(self) -> str:
        return self.key("work")

    @property
    def dead(self) -> str:
        return self.key("dead")

    @property
    def timers(self) -> str:
        return self.key("timers")

    @property
    def threads(self) -> str:
        """Sorted set of the partition's thread ids by last activity (ms)."""
        return self.key("threads")

    @property
    def summaries(self) -> str:
        """Hash of thread id to its projected one-line summary (JSON)."""
        return self.key("summaries")

    @property
    def active(self) -> str:
        """Hash of thread id to the run that has the thread now."""
        return self.key("active")

    @property
    def cancels(self) -> str:
        """Sharded pub/sub channel (SPUBLISH) on which cancelled run ids are announced to
        workers: in the partition's slot, so on a cluster only its node carries it."""
        return self.key("cancels")

    @property
    def runs(self) -> str:
        """Hash of run id to its projected summary (JSON), for listing runs."""
        return self.key("runs")

    @property
    def runs_by_time(self) -> str:
        """Sorted set of the projected run ids by requested time (ms), for paging runs."""
        return self.key("runs", "requested")

    def runs_with_status(self, status: str) -> str:
        """Sorted set of the projected run ids in `status`, by requested time (ms)."""
        return self.key("runs", "status", status)

    @property
    def runs_ended(self) -> str:
        """Sorted set of the projected finished run ids by end time (ms), for retention."""
        return self.key("runs", "ended")

    @property
    def compact(self) -> str:
        """Sorted set of the partition's threads to look at for compaction, by when (ms)."""
        return self.key("compact")

    @property
    def compact_cursor(self) -> str:
        """String: the activity (ms) up to which compaction scheduled the partition's threads."""
        return self.key("compact", "cursor")

    def queue(self, thread_id: str) -> str:
        """List of the runs waiting for the thread, oldest first."""
        return self.key("queue", thread_id)

    def thread(self, thread_id: str) -> str:
        return self.key("thread", thread_id)

    def run(self, run_id: str) -> str:
        return self.key("run", run_id)

    def view(self, thread_id: str) -> str:
        return self.key("view", thread_id)

    def dedupe(self, event_id: str) -> str:
        return self.key("dedupe", event_id)

    def access(self, thread_id: str) -> str:
        """Hash of who may use the thread: `owner`, and `m:<user>` per member."""
        return self.key("access", thread_id)

    def users_threads(self, user: str) -> str:
        """Sorted set of the partition's threads `user` owns or is a member of (joined ms)."""
        return self.key("mine", user)

    def search_word(self, word: str) -> str:
        """Sorted set of the partition's threads that hold `word`, by its points in each
        (projections/search_index.py); gone with the last thread that holds it."""
        return self.key("search", "w", word)

    def search_doc(self, thread_id: str) -> str:
        """Hash of what the search index holds for the thread: its words, source by source."""
        return self.key("search", "doc", thread_id)


@dataclass(frozen=True)
class Keyspace:
    partitions: int

    def partition(self, thread_id: str) -> Partition:
        return Partition(partition_of(thread_id, self.partitions))

    def all(self) -> list[Partition]:
        return [Partition(n) for n in range(self.partitions)]
