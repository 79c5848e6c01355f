"""Run leases: who owns a run now, proven by a fencing token."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Literal

import orjson

from slipstream import errors
from slipstream.backend import Backend, Entry
from slipstream.batching import ScriptBatch
from slipstream.events import new_event_id
from slipstream.keys import Keyspace, Partition

# Events after the stored view a start gives back: a projector keeps views a few events
# behind at most; a run that finds more reads the rest itself.
TAIL_AT_CLAIM = 200


def _lua(name: str) -> str:
    return resources.files("slipstream").joinpath(f"lua/{name}").read_text()


@dataclass(frozen=True)
class ViewAtClaim:
    """The thread's stored view as the claim found it, and the events after it; for an
    agent of `no_view` (a workflow), no view and the events from the run's `since`."""

    fields: dict[str, str]
    tail: list[Entry]
    whole: bool  # the tail reaches the stream's end (it was not cut at the count asked)


@dataclass(frozen=True)
class Claim:
    outcome: Literal["OK", "NORUN", "FINISHED", "BUSY", "DUPLICATE"]
    token: int = 0
    attempt: int = 0
    cancel_requested: bool = False
    failures: int = 0
    detail: str = ""
    agent: str = ""
    since: str = ""  # stream id where the run's own events begin
    trace: str = ""  # the run's W3C traceparent (slipstream/tracing.py), "" when untraced
    started: bool = False  # run.started was appended by the claim (`Leases.start`)
    view: ViewAtClaim | None = None  # what `Leases.start` read for a chat run


class Leases:
    def __init__(
        self,
        backend: Backend,
        keyspace: Keyspace,
        *,
        lease_ms: int,
        batch: ScriptBatch | None = None,
    ) -> None:
        self.redis = backend.client
        # Claims and renewals sent with the process's other script calls (the store's).
        self.batch = batch or ScriptBatch(backend)
        self.keys = keyspace
        self.lease_ms = lease_ms
        self._claim = self.redis.register_script(_lua("claim.lua"))
        self._renew = self.redis.register_script(_lua("renew.lua"))

    def _partition(self, thread_id: str) -> Partition:
        return self.keys.partition(thread_id)

    async def claim(self, run_id: str, thread_id: str, worker: str, entry_id: str = "") -> Claim:
        # A fresh id per call, so the script tells a resend of this call (the
        # same id) from a later claim by the same worker (a takeover, which counts).
        claim_id = secrets.token_hex(8)
        reply = await self._claim(
            keys=[self._partition(thread_id).run(run_id)],
            args=[worker, self.lease_ms, entry_id, claim_id],
        )
        return _claim_of(reply)

    async def start(
        self,
        run_id: str,
        thread_id: str,
        worker: str,
        entry_id: str,
        *,
        feed_maxlen: int,
        max_attempts: int,
        no_view: Iterable[str] = (),
        tail: int = TAIL_AT_CLAIM,
    ) -> Claim:
        """Claim the run and start it in one round trip: `run.started` appended (unless a
        cancel waits or it is out of attempts: `Claim.started`), and for a run whose agent
        is not in `no_view`, the thread's stored view and up to `tail` events after it (for
        one that is, the events from where the run's own begin)."""
        part = self._partition(thread_id)
        reply = await self.batch.call(
            self._claim,
            [
                part.run(run_id),
                part.thread(thread_id),
                part.feed,
                part.view(thread_id),
            ],
            [
                worker,
                self.lease_ms,
                entry_id,
                secrets.token_hex(8),
                thread_id,
                run_id,
                new_event_id(),
                orjson.dumps(worker).decode(),
                feed_maxlen,
                max_attempts,
                ",".join(no_view),
                tail,
            ],
        )
        if str(reply[0]) == "NOTHREAD":
            raise errors.ThreadNotFound(thread_id)
        claim = _claim_of(reply)
        if claim.outcome != "OK" or len(reply) < 9:
            return claim
        started = str(reply[8])
        view = None
        if len(reply) > 10:
            # A script's replies are flat lists (redis-py makes dicts of HGETALL's and
            # XRANGE's only when it sends those commands itself).
            entries: list[Entry] = [(str(i), _pairs(fields)) for i, fields in reply[10]]
            view = ViewAtClaim(
                _pairs(reply[9]),
                [(i, fields) for i, fields in entries if fields],  # as as_entries drops
                whole=len(entries) < tail,
            )
        return replace(claim, started=started in ("1", "again"), view=view)

    async def renew(
        self, run_id: str, thread_id: str, token: int, worker: str, entry_id: str
    ) -> tuple[bool, bool]:
        """Returns (still ours, cancel requested)."""
        part = self._partition(thread_id)
        reply = await self.batch.call(
            self._renew, [part.run(run_id), part.work], [token, self.lease_ms, worker, entry_id]
        )
        return bool(int(reply[0])), str(reply[1]) == "1"


def _claim_of(reply: list[Any]) -> Claim:
    """The claim script's answer, as a Claim (without what `Leases.start` adds)."""
    outcome = str(reply[0])
    if outcome == "OK":
        return Claim(
            "OK",
            int(reply[1]),
            int(reply[2]),
            str(reply[3]) == "1",
            int(reply[4]),
            agent=str(reply[5]),
            since=str(reply[6]),
            trace=str(reply[7]),
        )
    if outcome == "FINISHED":
        return Claim("FINISHED", detail=str(reply[1]))
    if outcome == "DUPLICATE":
        return Claim("DUPLICATE")
    if outcome == "BUSY":
        return Claim("BUSY", detail=f"{reply[1]} holds it for {reply[2]} ms more")
    return Claim("NORUN")


def _pairs(flat: list[Any]) -> dict[str, str]:
    """A flat [name, value, ...] reply as a dict."""
    names = [str(x) for x in flat]
    return dict(zip(names[::2], names[1::2], strict=True))
