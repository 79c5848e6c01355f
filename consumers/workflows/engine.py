"""Runs one attempt of a workflow run: replay the journal, run on, then park or finish."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

import orjson
from pydantic import JsonValue, TypeAdapter

from consumers import spans
from consumers.agents import agent_named
from consumers.answer import AnswerWriter, Attempt
from consumers.llm.base import LLM, ChatMessage, Prompt
from consumers.workflows.context import (
    GatherMisuse,
    NonDeterminism,
    StepError,
    Suspend,
    UnknownAgent,
    WorkflowContext,
)
from consumers.workflows.journal import journal_of
from consumers.workflows.registry import WorkflowDef
from slipstream import errors, metrics, tracing
from slipstream import events as ev
from slipstream.clock import RedisClock
from slipstream.codec import Unreadable
from slipstream.keys import derived_hex
from slipstream.store import EventStore
from slipstream.supervise import is_redis_fault

_JSON: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)
log = logging.getLogger("slipstream.workflows")


class WorkflowFailed(Exception):
    """The workflow cannot finish: its reason goes to run.failed and the dead letters."""


def turn_message_id(run_id: str, op: int) -> str:
    """A later agent turn's message id: 64 bits hashed from the whole run id and the position.

    Every fire of a schedule runs in one thread, so ids from anything less
    than the whole run id would let two runs write into one message.
    """
    return "m" + derived_hex("turn", run_id, str(op))


@dataclass
class RunIO:
    """The engine's side of a context: fenced writes, agent streaming, Redis's clock."""

    store: EventStore
    llm: LLM
    clock: RedisClock
    attempt: Attempt
    workflow: str
    signals: frozenset[str]
    flush_ms: int
    cancelled: asyncio.Event
    agent_ops: list[int] = field(default_factory=list)
    pending: list[ev.Event] = field(default_factory=list)
    held_back: list[ev.Event] = field(default_factory=list)  # an interrupted turn's unsent tail

    @property
    def run_id(self) -> str:
        return self.attempt.run_id

    @property
    def thread_id(self) -> str:
        return self.attempt.thread_id

    def defer(self, event: ev.Event) -> None:
        """Journal `event` with the next write rather than on its own round trip."""
        self.pending.append(event)

    def take_pending(self) -> list[ev.Event]:
        taken, self.pending = self.pending, []
        return taken

    def timed_step(self, kind: str, outcome: str, began: float) -> None:
        """A step or agent turn this attempt ran ended: its time from `began` (monotonic)."""
        metrics.STEP_SECONDS.labels(self.workflow, kind, outcome).observe(time.monotonic() - began)

    async def write(self, events: list[ev.Event]) -> None:
        await self.store.append(self.attempt.fenced([*self.take_pending(), *events]))

    def used_message(self, op: int) -> None:
        if op not in self.agent_ops:
            self.agent_ops.append(op)

    def message_for(self, op: int) -> str:
        """The run's reply takes the first agent turn; later turns get messages of their own."""
        self.used_message(op)
        if self.agent_ops[0] == op:
            return self.attempt.reply_id
        return turn_message_id(self.run_id, op)

    async def stream_agent(
        self, op: int, label: str, agent: str, prompt: str, *, speaker: str | None = None
    ) -> str:
        """Stream `agent`'s answer to `prompt` into the turn's message and journal it.

        The message is attributed to `speaker`, else to the workflow: `agent` only
        lends its system prompt. A new attempt streams into the same message with
        its own attempt number, which replaces the text an interrupted one left.
        """
        known = agent_named(agent)
        a = self.attempt
        target = Attempt(
            a.thread_id,
            a.run_id,
            self.message_for(op),
            speaker or self.workflow,
            a.attempt,
            a.token,
            a.entry_id,
        )
        writer = AnswerWriter(self.store, target, self.flush_ms)
        began = time.monotonic()
        question = Prompt(
            system=known.system,
            messages=(ChatMessage("user", prompt),),
            question=prompt,
            model=known.model,
            max_tokens=known.max_tokens,
            temperature=known.temperature,
        )
        with tracing.model_span(self.llm.name, known.model) as span:
            try:
                await writer.stream(self.llm.stream(question), self.cancelled)
            except (errors.RunCancelled, errors.ProviderError):
                self.held_back = writer.held_back()  # written with the cancel, retry or failure
                raise
            finally:
                spans.record_usage(span, writer.usage)
        # Timed when it answered: a turn whose model call failed is a retry of the run.
        self.timed_step("agent", "ok", began)
        return await writer.complete(
            lambda text: [
                *self._usage(writer, known.model),
                ev.StepCompleted(run_id=a.run_id, op=op, step=label, kind="agent", result=text),
            ]
        )

    def _usage(self, writer: AnswerWriter, model: str | None) -> list[ev.Event]:
        """The turn's model call, counted like a chat run's, for whom the message is
        attributed to (the writer's attempt); it goes out with the turn's completion."""
        usage = writer.usage_event(model or self.llm.name)
        return [] if usage is None else [usage]


@dataclass(frozen=True)
class Parked:
    status: str
    waiting_for: str
    until_ms: int | None
    events: list[ev.Event]
    release_thread: bool
    signals_seen: int | None


@dataclass(frozen=True)
class Finished:
    result: JsonValue
    reply_text: str | None  # the reply's text when no agent turn wrote it
    journal: list[ev.Event]  # what is still to be journaled, written with the end


async def run_workflow(
    definition: WorkflowDef,
    io: RunIO,
    question: str,
    journal: list[ev.Event],
    *,
    rng: random.Random | None = None,
) -> Parked | Finished:
    """Replay `journal` (the run's events so far) and run on until it finishes or parks.

    Raises `RunCancelled` when cancelled, `WorkflowFailed` when it cannot go on,
    an agent turn's `ProviderError` as it is (the runner retries it as a chat
    run's), and a Redis fault as it is: the run's journal could not be read or written,
    which is no fault of the workflow, so the attempt is left to its lease.
    """
    mine = [e for e in journal if not isinstance(e, Unreadable)]
    ctx = WorkflowContext(
        io, journal_of(mine), version=definition.version, rng=rng or random.Random()
    )

    async def body() -> JsonValue:
        await ctx.start()
        return _JSON.validate_python(await definition.fn(ctx, question))

    task = asyncio.ensure_future(body())
    cancel = asyncio.ensure_future(io.cancelled.wait())
    try:
        await asyncio.wait({task, cancel}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # The attempt itself was cancelled (lease lost, shutdown): stop the body too,
        # or it would go on starting steps beside the run's next owner.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    finally:
        cancel.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise errors.RunCancelled(io.run_id)
    try:
        result = task.result()
    except Suspend as parked:
        return Parked(
            parked.status,
            parked.waiting_for,
            parked.until_ms,
            [*io.take_pending(), *parked.events],
            parked.release_thread,
            parked.signals_seen,
        )
    except NonDeterminism as exc:
        raise WorkflowFailed(str(exc)) from exc
    except (StepError, GatherMisuse, UnknownAgent) as exc:
        raise WorkflowFailed(str(exc)) from exc
    except (errors.RunCancelled, errors.StaleFence, errors.ThreadNotFound, errors.RunNotFound):
        raise
    except errors.ProviderError:
        # An agent turn's model call failed: the run retries (or fails) as a chat
        # run does, and the next attempt replays the turns journaled before it.
        raise
    except Exception as exc:
        if is_redis_fault(exc):
            # A journal write, the clock or an agent turn's deltas: a step's own
            # faults were journaled as its failure already, so this one is ours.
            raise
        # Its text may carry secrets or URLs: the traceback goes to the log, the class to the run.
        log.error("run %s: workflow %r raised", io.run_id, definition.name, exc_info=exc)
        raise WorkflowFailed(
            f"workflow {definition.name!r} raised {type(exc).__name__} (see the worker's log)"
        ) from exc
    reply = None
    if not io.agent_ops:
        reply = (
            result
            if isinstance(result, str)
            else orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
        )
    return Finished(result, reply, io.take_pending())
