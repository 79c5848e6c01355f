"""Waiting for replicas after the appends whose loss would break a promise.

Redis replicates asynchronously: a master killed right after it answered can
take its last writes with it, and its replica, promoted, never had them. For
most events that is a retry's business (a worker's delta is written again by
the next attempt). Two kinds are promises made outside Redis: the 202 of a
message or a signal (the client will not send it again) and a run's last
append (its work item is acknowledged with it, so nothing would run it again).
Those appends are followed by `WAIT replicas ms` on the connection that wrote
them (WAIT counts only its own connection's writes), so the answer goes out
once that many replicas hold the write, or after `ms`.

A WAIT that comes back short leaves the write standing: it is on the master,
and refusing it would only make the client send it again to the same master.
It is counted (`short`) and logged once per outage of that master's replicas.
While the outage lasts (a promoted replica has no replica of its own until
someone gives it one) the master's promised writes skip the WAIT, counted as
short too, but for one a second that probes with it: so an outage costs one
write a second the WAIT's time, not every write.
A call that wrote nothing (a resend, a refusal, or the script asking for more
keys) is not counted; its WAIT, with nothing new of its connection to wait
for, returns at once while the replicas keep up.
An append that could not go the waiting way (its slot is moving, or its node
was lost mid-call) goes through the cluster client, which follows the slot;
it is counted (`unwaited`), not waited on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from slipstream.backend import Backend
from slipstream.events import Event

log = logging.getLogger("slipstream.replicas")

# The events whose append is acknowledged to someone who will not send it again.
REPLICATED = frozenset(
    {"message.sent", "signal.received", "run.completed", "run.failed", "run.cancelled"}
)


def wants_replicas(events: Sequence[Event]) -> bool:
    return any(event.type in REPLICATED for event in events)


@dataclass
class ReplicaWait:
    """`replicas` to wait for (0: none) for at most `timeout_ms` after a promised append."""

    replicas: int
    timeout_ms: int
    probe_s: float = 1.0  # in an outage, how often a write waits to see if it is over
    short: int = 0  # promised writes that stand unconfirmed
    timed_out: int = 0  # of them, those that waited the whole timeout
    unwaited: int = 0  # promised writes that went the cluster client's way
    _outages: dict[str, float] = field(default_factory=dict)  # node -> when it last probed

    @property
    def outages(self) -> list[str]:
        """The masters whose replicas did not acknowledge the last write that waited for them."""
        return sorted(self._outages)

    async def append(
        self, backend: Backend, script: AsyncScript, keys: list[str], args: list[str]
    ) -> Any:
        """Run the append script on the master of `keys`, then WAIT; the script's reply."""
        try:
            async with backend.pipeline_for(keys[0], transaction=False) as pipe:
                node = _address(pipe)
                probed = self._outages.get(node)
                wait = probed is None or time.monotonic() - probed >= self.probe_s
                for load in (False, True):
                    if load:  # a promoted replica has not got the scripts its master had
                        pipe.execute_command("SCRIPT", "LOAD", script.script)
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    if wait:
                        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
                    results = await pipe.execute(raise_on_error=False)
                    reply, acked = (results[-2], results[-1]) if wait else (results[-1], None)
                    if not isinstance(reply, NoScriptError):
                        break
                if isinstance(reply, Exception):
                    # Raised inside, so pipeline_for sees a redirection and refreshes the layout.
                    raise reply
        except RedisError as exc:
            if not backend.cluster:
                raise  # one Redis: nothing moves, and a timed-out call is not sent twice
            # The slot moved (MOVED, ASK: a script cannot follow them on a plain
            # connection) or the node is gone: the cluster client routes it, and
            # retries it like any append (every promised append is deduplicated).
            self.unwaited += 1
            log.info("append not waited on (%s: %s)", type(exc).__name__, str(exc)[:120])
            return await script(keys=keys, args=args)
        if isinstance(reply, list) and reply and reply[0] == "OK":  # it wrote: count its WAIT
            if wait:
                self._count(node, int(acked) if isinstance(acked, int) else 0)
            else:
                self.short += 1
        return reply

    def _count(self, node: str, acked: int) -> None:
        if acked >= self.replicas:
            if self._outages.pop(node, None) is not None:
                log.warning("replicas of %s acknowledge writes again", node)
            return
        self.short += 1
        self.timed_out += 1
        if self._outages.get(node) is None:
            log.warning(
                "%s: %d of %d replicas acknowledged a write within %d ms; writes stand, "
                "but a failover of %s now would lose them (said once until they catch up; "
                "meanwhile one write a second waits)",
                node,
                acked,
                self.replicas,
                self.timeout_ms,
                node,
            )
        self._outages[node] = time.monotonic()


def _address(pipe: Any) -> str:
    kwargs = pipe.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
