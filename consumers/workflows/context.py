"""What a workflow body sees: steps, sleeps, waits and journaled values.

Each operation takes the next position (`op`) and asks the journal first: a
completed position returns its journaled result without running again; the
first unfinished one runs and is journaled. Code that disagrees with its
journal fails the run with `NonDeterminism`, naming the position and both
versions.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

from pydantic import BaseModel, JsonValue, TypeAdapter

from consumers.agents import AGENTS
from consumers.backoff import compute_backoff
from consumers.redact import without_urls
from consumers.workflows.journal import VERSION_STEP, Journal, Op
from slipstream import events as ev
from slipstream import tracing

if TYPE_CHECKING:
    from consumers.workflows.engine import RunIO

T = TypeVar("T")

QUICK_STEP_S = 0.05
log = logging.getLogger("slipstream.workflows")


class Suspend(BaseException):
    """Unwinds the workflow to park the run: for a timer, a signal, or a step's back-off.

    A BaseException so that a body's `except Exception` cannot swallow it.
    """

    def __init__(
        self,
        *,
        status: str,
        waiting_for: str,
        until_ms: int | None,
        events: list[ev.Event],
        release_thread: bool,
        signals_seen: int | None = None,
    ) -> None:
        super().__init__(f"suspended: {waiting_for}")
        self.status = status
        self.waiting_for = waiting_for
        self.until_ms = until_ms
        self.events = events
        self.release_thread = release_thread
        self.signals_seen = signals_seen  # for a signal wait: how many the journal holds


class NonDeterminism(Exception):
    """The workflow's code and its journal disagree; the run cannot be replayed."""


class UnknownAgent(Exception):
    """An agent turn names no agent of the agents file: the run fails with this reason."""


class StepError(Exception):
    """A step failed on its last attempt; the workflow may catch it."""

    def __init__(self, step: str, error: str, attempts: int) -> None:
        super().__init__(f"step {step!r} failed after {attempts} attempt(s): {error}")
        self.step = step
        self.error = error
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_ms: int = 500
    max_ms: int = 30_000


@dataclass(frozen=True)
class Signal:
    name: str
    payload: JsonValue = None
    timed_out: bool = False


@dataclass(frozen=True)
class StepInfo:
    run_id: str
    op: int
    name: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of this step of this run: give it to side effects."""
        return f"{self.run_id}:{self.op}:{self.name}"


_current_step: contextvars.ContextVar[StepInfo] = contextvars.ContextVar("slipstream_step")
# Inside ctx.gather: how many operations this argument has taken (it may take one).
_branch: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "slipstream_branch", default=None
)


class GatherMisuse(Exception):
    """A gather argument ran more than one operation, so replay could not place them."""


def current_step() -> StepInfo:
    """Inside a step function: which step of which run this is, and its idempotency key."""
    try:
        return _current_step.get()
    except LookupError:
        raise RuntimeError("current_step() is only known inside a workflow step") from None


_JSON: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)
_ADAPTERS: dict[Callable[..., Any], TypeAdapter[Any] | None] = {}


def _adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """The step's return annotation as a TypeAdapter, built once per function."""
    if fn in _ADAPTERS:
        return _ADAPTERS[fn]
    try:
        annotation = get_type_hints(fn).get("return")
    except Exception:
        annotation = None
    adapter = None if annotation in (None, type(None)) else TypeAdapter(annotation)
    if len(_ADAPTERS) < 10_000:  # lambdas made per call must not grow this for ever
        _ADAPTERS[fn] = adapter
    return adapter


class WorkflowContext:
    def __init__(self, io: RunIO, journal: Journal, *, version: int, rng: random.Random) -> None:
        self._io = io
        self._journal = journal
        self._next_op = 0
        self._version = version
        self._rng = rng
        self.run_id = io.run_id
        self.thread_id = io.thread_id
        self.default_retry = RetryPolicy()

    # -- positions and the journal --------------------------------------------

    def _take(self, kind: str, name: str) -> tuple[int, Op | None]:
        branch = _branch.get()
        if branch is not None:
            branch[0] += 1
            if branch[0] > 1:
                raise GatherMisuse(
                    f"{kind} {name!r} is a second operation in one argument of ctx.gather; "
                    "on replay the positions of such branches interleave differently. "
                    "Give gather one operation per argument (a step, an agent turn, ...)"
                )
        op = self._next_op
        self._next_op += 1
        recorded = self._journal.ops.get(op)
        if recorded is not None and (recorded.name, recorded.kind) != (name, kind):
            old = self._journal.workflow_version
            raise NonDeterminism(
                f"workflow {self._io.workflow!r}, operation {op}: the code asks for "
                f"{kind} {name!r} (code version {self._version}) but the journal holds "
                f"{recorded.kind} {recorded.name!r} (journal version {old or 'unknown'}); "
                "renamed or reordered steps need ctx.patched() to keep old runs on the old path"
            )
        return op, recorded

    async def _journaled(
        self, name: str, make: Callable[[], JsonValue | Awaitable[JsonValue]]
    ) -> JsonValue:
        op, recorded = self._take("value", name)
        if recorded is not None and recorded.status == "completed":
            return recorded.result
        made = make()
        value: JsonValue = await made if inspect.isawaitable(made) else made
        await self._io.write(
            [ev.StepCompleted(run_id=self.run_id, op=op, step=name, kind="value", result=value)]
        )
        return value

    async def start(self) -> None:
        """Record the code version the run starts on, once (with the run's next write)."""
        op, recorded = self._take("value", VERSION_STEP)
        if recorded is not None and recorded.status == "completed":
            self._journal.workflow_version = (
                int(recorded.result) if isinstance(recorded.result, int) else None
            )
            return
        self._journal.workflow_version = self._version
        self._io.defer(
            ev.StepCompleted(
                run_id=self.run_id, op=op, step=VERSION_STEP, kind="value", result=self._version
            )
        )

    # -- journaled values ------------------------------------------------------

    async def now(self) -> datetime:
        """Redis's time (a test clock's, when one stands in), journaled."""
        ms = await self._journaled("now", self._io.clock.now_ms)
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)  # type: ignore[arg-type]

    async def random(self) -> float:
        value = await self._journaled("random", self._rng.random)
        return float(value)  # type: ignore[arg-type]

    async def uuid(self) -> str:
        value = await self._journaled(
            "uuid", lambda: str(uuid.UUID(int=self._rng.getrandbits(128)))
        )
        return str(value)

    async def patched(self, change_id: str) -> bool:
        """True on the new code path. Runs journaled before the change take the old path."""
        name = f"@patch:{change_id}"
        op = self._next_op
        recorded = self._journal.ops.get(op)
        if recorded is not None and recorded.name != name:
            return False  # an old run: this position already holds what the old code did
        await self._journaled(name, lambda: True)
        return True

    # -- steps -----------------------------------------------------------------

    async def step(
        self,
        name: str,
        fn: Callable[..., T | Awaitable[T]],
        *args: Any,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> T:
        """Run `fn(*args, **kwargs)` once per run: its result is journaled and replayed."""
        op, recorded = self._take("step", name)
        adapter = _adapter(fn)
        if recorded is not None and recorded.status == "completed":
            decoded: T = _decode(adapter, recorded.result)
            return decoded
        if recorded is not None and recorded.final:
            raise StepError(name, recorded.error or "", recorded.attempts)
        policy = retry or self.default_retry
        attempt = (recorded.attempts if recorded else 0) + 1
        started = ev.StepStarted(run_id=self.run_id, op=op, step=name, attempt=attempt)
        began = time.monotonic()
        token = _current_step.set(StepInfo(self.run_id, op, name, attempt))
        try:
            # The task copies the context, so the step's code sees its StepInfo.
            task = asyncio.ensure_future(
                tracing.traced(
                    f"step {name}",
                    self._step_attributes(op, name, attempt),
                    _call(fn, args, kwargs),
                )
            )
        finally:
            _current_step.reset(token)
        # Our own journal write is outside the step's `except`: a Redis fault
        # there is the engine's to handle (the attempt is left to its lease),
        # not a failure of the step's code.
        await self._journal_start(task, started)
        try:
            value = await task
        except Exception as exc:
            self._io.timed_step("step", "error", began)
            # The step's exception text may hold anything (a URL with a key): the
            # full text goes to the log, the journal keeps it without URLs.
            log.warning(
                "run %s: step %r attempt %d raised", self.run_id, name, attempt, exc_info=exc
            )
            error = f"{type(exc).__name__}: {without_urls(str(exc))}"
            failed = ev.StepFailed(
                run_id=self.run_id,
                op=op,
                step=name,
                error=error,
                attempt=attempt,
                final=attempt >= policy.max_attempts,
            )
            if failed.final:
                await self._io.write([failed])
                raise StepError(name, error, attempt) from exc
            delay = compute_backoff(
                attempt, base_ms=policy.base_ms, max_ms=policy.max_ms, rng=self._rng
            )
            raise Suspend(
                status="retrying",
                waiting_for="retry",
                until_ms=await self._io.clock.now_ms() + delay,
                events=[
                    failed,
                    ev.RunRetrying(
                        run_id=self.run_id,
                        attempt=attempt + 1,
                        delay_ms=delay,
                        reason=f"step {name!r}: {error}",
                    ),
                ],
                release_thread=False,
            ) from exc
        self._io.timed_step("step", "ok", began)
        result = _encode(adapter, value)
        await self._io.write(
            [ev.StepCompleted(run_id=self.run_id, op=op, step=name, result=result)]
        )
        replayed: T = _decode(adapter, result)
        return replayed

    async def _journal_start(self, task: asyncio.Future[Any], started: ev.StepStarted) -> None:
        """Journal a step's start only if it is still running after a moment.

        A quick step's start goes out with its result, one append instead of two;
        a slow one's start is journaled first, so a crash during it counts as an
        attempt. If that write fails, or the attempt is stopped meanwhile, the
        step is cancelled (as far as it can be: a thread runs on) and the
        exception raised.
        """
        try:
            done, _ = await asyncio.wait({task}, timeout=QUICK_STEP_S)
            if task in done:
                self._io.defer(started)
                return
            await self._io.write([started])
        except BaseException:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise

    async def run_agent(self, agent: str, prompt: str, *, name: str | None = None) -> str:
        """An agent turn as a step: the answer streams into the thread as a message.

        The message is the workflow's: `agent` lends its system prompt. For a
        message of the agent's own, use `agent_turn`.
        """
        return await self._agent_op(agent, prompt, name or f"agent:{agent}", speaker=None)

    async def agent_turn(self, agent: str, prompt: str, *, name: str | None = None) -> str:
        """`agent` takes a turn in the thread: its answer to `prompt`, written with its
        system prompt, streams into a message of its own, attributed to it.

        The first turn of a run writes the run's reply, each later one a message
        whose id comes from the run and the position. Journaled like a step: a
        completed turn returns its text without calling the model again; one an
        attempt did not finish runs again into the same message, whose text the
        new attempt's replaces (never added to).
        """
        return await self._agent_op(agent, prompt, name or f"turn:{agent}", speaker=agent)

    async def _agent_op(self, agent: str, prompt: str, label: str, *, speaker: str | None) -> str:
        op, recorded = self._take("agent", label)
        if recorded is not None and recorded.status == "completed":
            self._io.used_message(op)
            return str(recorded.result)
        if speaker is not None and speaker not in AGENTS:
            # A message in an agent's name needs that agent: the default's voice under
            # another name would mislead whoever reads the thread.
            raise UnknownAgent(
                f"workflow {self._io.workflow!r}: agent_turn names {speaker!r}, which is not "
                f"in the agents file (its agents: {', '.join(AGENTS)})"
            )
        attempt = (recorded.attempts if recorded else 0) + 1
        await self._io.write(
            [ev.StepStarted(run_id=self.run_id, op=op, step=label, kind="agent", attempt=attempt)]
        )
        return await tracing.traced(
            f"step {label}",
            {**self._step_attributes(op, label, attempt), "slipstream.step.kind": "agent"},
            self._io.stream_agent(op, label, agent, prompt, speaker=speaker),
        )

    def _step_attributes(self, op: int, name: str, attempt: int) -> dict[str, str | int]:
        return {
            "slipstream.run": self.run_id,
            "slipstream.workflow": self._io.workflow,
            "slipstream.step": name,
            "slipstream.step.op": op,
            "slipstream.step.attempt": attempt,
        }

    async def gather(self, *steps: Coroutine[Any, Any, Any]) -> list[Any]:
        """Run operations concurrently; positions follow the argument order.

        If one suspends or fails the others are cancelled (they run again on
        resume, as any unfinished step does) and the first problem is raised.
        """

        async def one(step: Coroutine[Any, Any, Any]) -> Any:
            _branch.set([0])
            return await step

        tasks = [asyncio.ensure_future(one(step)) for step in steps]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((t for t in tasks if t.done() and t.exception() is not None), None)
        if failed is None:
            return [t.result() for t in tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise failed.exception()  # type: ignore[misc]

    # -- time and people -------------------------------------------------------

    async def sleep(self, duration: float | timedelta) -> None:
        """Sleep without holding a worker: the run parks on a durable timer.

        The timer is due `duration` after Redis's time, not this worker's clock.
        """
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        await self._sleep(lambda now: now + int(seconds * 1000))

    async def sleep_until(self, when: datetime) -> None:
        due = int(when.timestamp() * 1000)
        await self._sleep(lambda _now: due)

    async def _sleep(self, due_from: Callable[[int], int]) -> None:
        op, recorded = self._take("sleep", "sleep")
        if recorded is not None and recorded.status == "completed":
            return
        now = await self._io.clock.now_ms()
        # A sleep already journaled keeps its due time: replay must not move it.
        due = recorded.until_ms if recorded and recorded.until_ms is not None else due_from(now)
        if now >= due:
            await self._io.write(
                [
                    ev.StepCompleted(
                        run_id=self.run_id, op=op, step="sleep", kind="sleep", result=due
                    ),
                    ev.RunResumed(run_id=self.run_id, op=op, reason="timer"),
                ]
            )
            return
        raise Suspend(
            status="waiting",
            waiting_for="timer",
            until_ms=due,
            events=[ev.RunWaiting(run_id=self.run_id, waiting_for="timer", op=op, until_ms=due)]
            if recorded is None
            else [],
            release_thread=True,
        )

    async def wait_for(
        self,
        signal: str,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109 - durable, not asyncio's
    ) -> Signal:
        """Wait for a person (POST /api/runs/{id}/signal) without holding a worker.

        A signal sent before the wait is kept and taken at once. With a
        timeout, the wait ends with `Signal(timed_out=True)` when it is due.
        """
        if signal not in self._io.signals:
            raise ValueError(
                f"workflow {self._io.workflow!r} does not declare signal {signal!r}; "
                f"add it to @workflow(signals=...)"
            )
        name = f"wait:{signal}"
        op, recorded = self._take("wait", name)
        if recorded is not None and recorded.status == "completed":
            result = recorded.result if isinstance(recorded.result, dict) else {}
            return Signal(signal, result.get("payload"), bool(result.get("timed_out")))
        arrived = self._journal.signals.get(signal, [])
        taken = self._journal.consumed(signal)
        if len(arrived) > taken:
            return await self._resume_wait(op, name, Signal(signal, arrived[taken]))
        # The timeout is due after Redis's time; a wait already journaled keeps its due time.
        due = recorded.until_ms if recorded is not None else None
        timeout_ms: int | None = None
        if due is None and timeout is not None:
            seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
            timeout_ms = int(seconds * 1000)
            due = await self._io.clock.now_ms() + timeout_ms
            expired = timeout_ms <= 0
        else:
            expired = due is not None and await self._io.clock.now_ms() >= due
        if expired:
            return await self._resume_wait(op, name, Signal(signal, None, timed_out=True))
        raise Suspend(
            status="waiting",
            waiting_for=signal,
            until_ms=due,
            events=[]
            if recorded is not None
            else [
                ev.RunWaiting(
                    run_id=self.run_id,
                    waiting_for=signal,
                    op=op,
                    until_ms=due,
                    timeout_ms=timeout_ms,
                )
            ],
            release_thread=True,
            signals_seen=len(arrived),
        )

    async def _resume_wait(self, op: int, name: str, signal: Signal) -> Signal:
        self._journal.ops[op] = Op(
            op,
            name,
            "wait",
            "completed",
            result={"payload": signal.payload, "timed_out": signal.timed_out},
        )
        await self._io.write(
            [
                ev.StepCompleted(
                    run_id=self.run_id,
                    op=op,
                    step=name,
                    kind="wait",
                    result={"payload": signal.payload, "timed_out": signal.timed_out},
                ),
                ev.RunResumed(
                    run_id=self.run_id, op=op, reason="timeout" if signal.timed_out else "signal"
                ),
            ]
        )
        return signal


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A step's own code: awaited if async, else in a thread, so a slow or blocking
    step cannot stall the lease heartbeat."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    value = await asyncio.to_thread(fn, *args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


def _encode(adapter: TypeAdapter[Any] | None, value: Any) -> JsonValue:
    if adapter is not None:
        encoded: JsonValue = adapter.dump_python(value, mode="json")
        return encoded
    if isinstance(value, BaseModel):
        dumped: JsonValue = value.model_dump(mode="json")
        return dumped
    return _JSON.validate_python(value)


def _decode(adapter: TypeAdapter[Any] | None, value: JsonValue) -> Any:
    return adapter.validate_python(value) if adapter is not None else value
