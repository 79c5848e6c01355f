"""Long-running loops that survive Redis faults, and a record of their progress.

Every background job of a process (reading work, taking over lapsed work,
firing timers, folding views, tailing feeds) is one `Loop`: a pass that is
run again and again. A pass that fails on a Redis fault (connection lost,
timeout, LOADING, READONLY, BUSY, NOGROUP, ...) is retried after a capped,
jittered back-off, and the outage is logged once when it starts and once when
it ends, not once per try, and once for the whole process however many of its
loops and runs meet it (`Outages`). A pass that fails on anything else is a bug: it is
logged with its traceback (at most once a minute) and retried the same way,
so one bad input cannot end the process's work for good.

Each successful pass records progress in `Liveness`, which `/healthz` reads
to say which loop is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterUnreachableError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slipstream.backoff import compute_backoff

# Replies of a Redis that is there but cannot serve now: wait and try again.
_TRANSIENT_REPLIES = (
    "LOADING",
    "READONLY",
    "BUSY",
    "NOGROUP",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
    "OOM",  # over maxmemory: writes resume once memory is freed
    "MISCONF",  # cannot persist: writes resume once the disk is writable
)
# A cluster in flux: no node reachable, a slot with no master yet, a slot that
# moved or is moving (redis-py strips the MOVED/ASK word from their text).
_CLUSTER_FAULTS = (
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    ClusterDownError,
    MovedError,
    AskError,
    TryAgainError,
)
TRACEBACK_EVERY_S = 60.0
RUN_FAULT_WINDOW_S = 30.0


def is_redis_fault(exc: BaseException) -> bool:
    """A fault of the connection or the server, as opposed to a bug of ours."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, _CLUSTER_FAULTS):
        return True
    if isinstance(exc, ResponseError):
        # redis-py takes the code off the text of the replies it has a class for
        # (ReadOnlyError, OutOfMemoryError, ...) and keeps it as status_code.
        code = getattr(exc, "status_code", None)
        return code in _TRANSIENT_REPLIES or str(exc).startswith(_TRANSIENT_REPLIES)
    return isinstance(exc, RedisError | OSError)


def is_missing_group(exc: BaseException) -> bool:
    """NOGROUP: the stream or its group is gone (a Redis restarted without its data)."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


@dataclass
class _Progress:
    last_ok: float
    stale_after_s: float
    failing_since: float | None = None
    last_error: str = ""


@dataclass
class Liveness:
    """When each loop last finished a pass, for health checks."""

    clock: Callable[[], float] = time.monotonic
    loops: dict[str, _Progress] = field(default_factory=dict)

    def register(self, name: str, stale_after_s: float) -> None:
        self.loops[name] = _Progress(self.clock(), stale_after_s)

    def ok(self, name: str) -> None:
        progress = self.loops.get(name)
        if progress is not None:
            progress.last_ok = self.clock()
            progress.failing_since = None

    def failed(self, name: str, error: str) -> None:
        progress = self.loops.get(name)
        if progress is not None:
            if progress.failing_since is None:
                progress.failing_since = self.clock()
            progress.last_error = error

    def forget(self, name: str) -> None:
        self.loops.pop(name, None)

    def down(self) -> dict[str, str]:
        """Loops that have made no progress within their window, with why."""
        now = self.clock()
        found: dict[str, str] = {}
        for name, progress in sorted(self.loops.items()):
            idle = now - progress.last_ok
            if idle > progress.stale_after_s:
                why = f": {progress.last_error}" if progress.last_error else ""
                found[name] = f"no progress for {idle:.1f} s{why}"
        return found


class Outages:
    """The Redis outages of one process as a whole, so that an outage is two log lines.

    A process runs a dozen loops or more (a tail and a reader per partition, takeovers,
    timers) and up to `SLIPSTREAM_WORKER_CONCURRENCY` runs: all of them meet a dropped
    connection at once. The first to meet it says so; the rest stay quiet until the
    last loop that failed works again, which says so once. Runs never retry (they are
    left to their lease), so they can start an outage but only a loop can end one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failing: set[int] = set()  # ids of the loops failing now
        self._run_failed_at: float | None = None
        self._started = 0.0
        self._failures = 0

    @property
    def ongoing(self) -> bool:
        if self._failing:
            return True
        # A run's fault that no loop has seen the end of: still the same outage for a
        # while (a process whose loops all stopped must not stay quiet for good).
        at = self._run_failed_at
        return at is not None and self.clock() - at < RUN_FAULT_WINDOW_S

    def loop_failed(self, loop: object) -> bool:
        """A loop's pass met a Redis fault; True when that starts the process's outage."""
        first = self._begin()
        self._failing.add(id(loop))
        return first

    def run_failed(self) -> bool:
        """A run met a Redis fault; True when that starts the process's outage."""
        first = self._begin()
        self._run_failed_at = self.clock()
        return first

    def loop_passed(self, loop: object) -> tuple[float, int] | None:
        """A loop's pass worked: (seconds, failures) when that ends the process's outage.

        Called after every pass, so it is a flag and a set lookup when all is well.
        """
        self._run_failed_at = None
        if id(loop) not in self._failing:
            return None
        self._failing.discard(id(loop))
        if self._failing:
            return None
        return self.clock() - self._started, self._failures

    def forget(self, loop: object) -> None:
        """A loop that stopped: it can no longer hold an outage open."""
        self._failing.discard(id(loop))

    def reset(self) -> None:
        """Forget every outage (a test's process-wide state must not reach the next)."""
        self._failing.clear()
        self._run_failed_at = None

    def _begin(self) -> bool:
        first = not self.ongoing
        if first:
            self._started, self._failures = self.clock(), 0
        self._failures += 1
        return first


OUTAGES = Outages()
"""This process's: every `Loop` reports to it unless given its own (tests)."""


@dataclass
class Loop:
    """One supervised job: `body` is one pass; it runs until `stop` is set.

    `every_s` is the pause between passes (0: run again at once; a pass that
    blocks on Redis paces itself). `on_missing_group` runs after a NOGROUP
    reply, to create the groups again before the next pass.
    """

    name: str
    body: Callable[[], Awaitable[object]]
    every_s: float = 0.0
    stale_after_s: float = 10.0
    on_missing_group: Callable[[], Awaitable[object]] | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("slipstream.loop"))
    base_ms: int = 100
    max_ms: int = 2_000
    rng: random.Random = field(default_factory=random.Random)
    outages: Outages = field(default_factory=lambda: OUTAGES)

    async def run(self, stop: asyncio.Event, liveness: Liveness | None = None) -> None:
        if liveness is not None:
            liveness.register(self.name, self.stale_after_s)
        failures = 0
        fault = False
        outage_started: float | None = None
        last_traceback = float("-inf")
        try:
            while not stop.is_set():
                try:
                    await self.body()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    fault = is_redis_fault(exc)
                    if liveness is not None:
                        liveness.failed(self.name, _short(exc))
                    if outage_started is None:
                        outage_started = time.monotonic()
                    if fault and self.outages.loop_failed(self):
                        self.log.warning("%s: Redis fault (%s); retrying", self.name, _short(exc))
                    if not fault and time.monotonic() - last_traceback > TRACEBACK_EVERY_S:
                        last_traceback = time.monotonic()
                        self.log.exception("%s: pass failed; retrying", self.name)
                    if is_missing_group(exc) and self.on_missing_group is not None:
                        await self._quietly(self.on_missing_group)
                    delay = compute_backoff(
                        min(failures, 20), base_ms=self.base_ms, max_ms=self.max_ms, rng=self.rng
                    )
                    await _sleep_unless(stop, delay / 1000)
                    continue
                ended = self.outages.loop_passed(self)
                if ended is not None:
                    self.log.warning(
                        "%s: working again after %.1f s (%d failed passes and runs)",
                        self.name,
                        *ended,
                    )
                elif outage_started is not None and not fault:
                    # This loop's own failures were bugs, each logged with its traceback.
                    self.log.warning(
                        "%s: working again after %.1f s (%d failed passes)",
                        self.name,
                        time.monotonic() - outage_started,
                        failures,
                    )
                outage_started, failures = None, 0
                if liveness is not None:
                    liveness.ok(self.name)
                if self.every_s:
                    await _sleep_unless(stop, self.every_s)
                else:
                    await asyncio.sleep(
                        0
                    )  # a pass that found its answer at once must not starve the rest
        finally:
            self.outages.forget(self)
            if liveness is not None:
                liveness.forget(self.name)

    async def _quietly(self, action: Callable[[], Awaitable[object]]) -> None:
        try:
            await action()
        except Exception as exc:  # the next pass fails again and retries this
            self.log.debug("%s: recovery failed: %s", self.name, _short(exc))


async def run_loops(
    loops: list[Loop], stop: asyncio.Event, liveness: Liveness | None, *, grace_s: float = 2.0
) -> None:
    """Run the loops side by side until `stop`; none ends the others.

    Once `stop` is set each loop finishes its pass; one still stuck after
    `grace_s` (a paused Redis holds a blocking read) is cancelled.
    """
    tasks = [asyncio.create_task(loop.run(stop, liveness), name=loop.name) for loop in loops]
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:  # a loop only ends early on a bug in the supervisor itself
            if task.done() and not stop.is_set():
                task.result()
        await asyncio.wait(tasks, timeout=grace_s)
    finally:
        stopped.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def keep_running(
    name: str,
    role: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    log: logging.Logger,
    *,
    liveness: Liveness | None = None,
) -> None:
    """Run a whole role (a worker, a projector) until `stop`; start it again if it ends.

    Its loops survive faults on their own; this is the last line, for a role
    that ends through a bug, so one process running every role keeps them all.
    """
    failures = 0
    while not stop.is_set():
        try:
            await role(stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s stopped unexpectedly; starting it again", name)
        else:
            if stop.is_set():
                return
            log.error("%s ended although nobody asked it to; starting it again", name)
        failures += 1
        if liveness is not None:
            liveness.register(name, 0.0)  # reported down until it is back
            liveness.failed(name, "restarting")
        await _sleep_unless(stop, compute_backoff(min(failures, 20), base_ms=200) / 1000)
        if liveness is not None:
            liveness.forget(name)


async def until_done(
    name: str, action: Callable[[], Awaitable[object]], stop: asyncio.Event, log: logging.Logger
) -> bool:
    """Run `action` until it succeeds once (False if `stop` came first): a role's set-up."""
    done = asyncio.Event()

    async def once() -> None:
        await action()
        done.set()

    either = asyncio.Event()
    watcher = asyncio.create_task(_set_when_either(stop, done, either))
    try:
        await Loop(name, once, log=log).run(either)
    finally:
        watcher.cancel()
    return done.is_set()


async def _set_when_either(a: asyncio.Event, b: asyncio.Event, out: asyncio.Event) -> None:
    waits = [asyncio.create_task(a.wait()), asyncio.create_task(b.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        out.set()
    finally:
        for wait in waits:
            wait.cancel()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0 or stop.is_set():
        return
    with contextlib.suppress(TimeoutError):  # not wait_for: see Notifier.wait_after
        async with asyncio.timeout(seconds):
            await stop.wait()


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
