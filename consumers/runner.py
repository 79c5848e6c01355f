"""Runs one claimed run to one of its ends: completed, cancelled, retrying or failed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from dataclasses import dataclass

from consumers import workflows
from consumers.agent_loop import AgentLoop, Journal, TokenBudgetReached, ToolRoundsExceeded
from consumers.agents import agent_named
from consumers.answer import AnswerWriter, Attempt
from consumers.approval import APPROVAL_SIGNAL, AwaitingApproval, waiting_event
from consumers.backoff import compute_backoff
from consumers.handoff import HandoffsExceeded
from consumers.llm.base import LLM
from consumers.prompt import context_for, trimmed_event
from consumers.redact import shown_reason
from consumers.tools import messages_of
from consumers.workflows.engine import Parked, RunIO, WorkflowFailed, run_workflow
from consumers.workflows.registry import WorkflowDef
from projections.thread_view import ThreadView
from projections.views import ViewStore
from slipstream import codec, errors, metrics
from slipstream import events as ev
from slipstream.clock import Clock, RedisClock
from slipstream.codec import Unreadable
from slipstream.config import Settings
from slipstream.leases import Claim
from slipstream.store import Append, EventStore, Stored
from slipstream.supervise import is_redis_fault

log = logging.getLogger("slipstream.runner")


@dataclass(frozen=True)
class RunFacts:
    reply_id: str
    agent: str
    question: str


def facts_from(events: list[ev.Event | Unreadable], run_id: str) -> RunFacts | None:
    """The run's ids and question, from the events since its request (None if not there)."""
    requested = next(
        (e for e in events if isinstance(e, ev.RunRequested) and e.run_id == run_id), None
    )
    if requested is None:
        return None
    asked = next(
        (
            e
            for e in events
            if isinstance(e, ev.MessageSent) and e.message_id == requested.message_id
        ),
        None,
    )
    if asked is None:
        return None  # a regenerated run: its question is further back
    return RunFacts(requested.reply_id, requested.agent, asked.content)


def _own_events(stored: list[Stored], run_id: str) -> list[ev.Event]:
    return [
        s.event
        for s in stored
        if not isinstance(s.event, Unreadable) and getattr(s.event, "run_id", None) == run_id
    ]


@dataclass(frozen=True)
class WorkItem:
    stream: str
    entry_id: str
    run_id: str
    thread_id: str


class Runner:
    def __init__(
        self,
        store: EventStore,
        llm: LLM,
        settings: Settings,
        worker: str,
        *,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        # Due times come from Redis's clock (or the test clock standing in for it).
        self.clock = RedisClock(store.redis, clock)
        self.store = store
        self.views = ViewStore(store)
        self.llm = llm
        self.settings = settings
        self.worker = worker
        self.rng = rng or random.Random()

    async def _facts(
        self, item: WorkItem, claim: Claim
    ) -> tuple[RunFacts | None, ThreadView | None, list[ev.Event]]:
        """What the run answers, with one read where it can.

        A workflow run reads only its own part of the thread (from `since`,
        kept in the run hash): its question, its ids and its journal. A chat
        run needs the conversation, so it reads the thread view; on a later
        attempt of an agent with tools it also reads its own events, for the
        tool calls journaled before.
        """
        if workflows.get(claim.agent) is not None and claim.since:
            if claim.view is not None and claim.view.whole:  # read by the claim
                key = self.store.stream_key(item.thread_id)
                stored = [Stored(i, codec.decode(key, i, f)) for i, f in claim.view.tail]
            else:
                stored = await self.store.read(item.thread_id, start=claim.since)
            own = _own_events(stored, item.run_id)
            facts = facts_from([s.event for s in stored], item.run_id)
            if facts is not None:
                return facts, None, own
        if claim.view is not None and workflows.get(claim.agent) is None:
            view = await self.views.current_from(
                item.thread_id,
                claim.view.fields,
                claim.view.tail,
                whole=claim.view.whole,
            )
        else:
            view = await self.views.current(item.thread_id)
        run = view.runs.get(item.run_id)
        if run is None:
            return None, view, []
        asked = view.message(run.message_id)
        facts = RunFacts(run.reply_id, run.agent, asked.content if asked else "")
        first = agent_named(run.agent)
        if workflows.get(run.agent) is None and (
            claim.attempt <= 1 or not (first.tools or first.handoffs)
        ):
            return facts, view, []
        stored = await self.store.read(item.thread_id, start=claim.since or f"{run.requested_at}-0")
        return facts, view, _own_events(stored, item.run_id)

    async def run(self, item: WorkItem, claim: Claim, cancelled: asyncio.Event) -> str:
        """Returns how the run ended: completed, cancelled, retrying, waiting or failed.

        Any exception but a lost lease, a shutdown, a Redis fault or the run's
        thread deleted (errors.RUN_GONE, raised on) counts as a failed attempt,
        wherever it comes from, so a run that cannot be handled ends at the
        attempt bound instead of being taken over for ever.
        A Redis fault is raised on: its run is left to its lease and taken
        over (claim.lua counts that attempt as lost), because an append that
        timed out may still be applied later, and so may a failure written
        after it.
        """
        attempt = Attempt(
            thread_id=item.thread_id,
            run_id=item.run_id,
            reply_id="",
            agent=claim.agent,
            attempt=claim.attempt,
            token=claim.token,
            entry_id=item.entry_id,
            requested_ms=metrics.stream_id_ms(claim.since) or 0,
        )
        # Before anything that can fail: a run whose worker keeps dying (or whose
        # handling keeps raising past this method) ends here.
        if claim.cancel_requested:
            return await self._cancelled(attempt, [])
        if claim.failures >= self.settings.max_attempts:
            return await self._fail(
                attempt, f"gave up after {claim.failures} attempts: its worker was lost each time"
            )
        try:
            facts, view, journal = await self._facts(item, claim)
        except (
            errors.StaleFence,
            errors.ThreadNotFound,
            errors.RunNotFound,
            asyncio.CancelledError,
        ):
            raise
        except Exception as exc:
            if is_redis_fault(exc):
                raise
            return await self._crashed(attempt, claim, exc, "while preparing the run")
        if facts is None:
            return await self._fail(attempt, f"run {item.run_id} is not in its thread's history")
        attempt = dataclasses.replace(attempt, reply_id=facts.reply_id, agent=facts.agent)
        if any(isinstance(event, ev.RunWaiting) for event in journal):
            # It goes on after waiting for a person: its first text is timed from this
            # attempt, not from the request, or the metric would time the person.
            attempt = dataclasses.replace(attempt, requested_ms=int(time.time() * 1000))
        writer = AnswerWriter(self.store, attempt, self.settings.flush_ms)
        loop: AgentLoop | None = None
        stage = "while starting the run"
        try:
            if not claim.started:  # `Leases.start` appended it with the claim
                await self.store.append(
                    attempt.fenced(
                        [
                            ev.RunStarted(
                                run_id=item.run_id,
                                attempt=claim.attempt,
                                worker=self.worker,
                                token=claim.token,
                            )
                        ],
                        refuse_if_cancelled=True,
                    )
                )
            definition = workflows.get(facts.agent)
            if definition is not None:
                stage = "in the workflow engine"
                return await self._workflow(
                    definition, attempt, claim, facts.question, cancelled, journal
                )
            assert view is not None
            stage = "while building the prompt"
            answering = agent_named(facts.agent)
            budget = answering.context_tokens or self.settings.context_tokens
            context = context_for(view, item.run_id, budget)
            prompt = context.prompt
            if context.cut is not None:  # recorded before the first model call
                await self.store.append(attempt.fenced([trimmed_event(attempt, context.cut)]))
            stage = "while streaming the answer"
            loop = AgentLoop(
                self.store,
                self.llm,
                writer,
                agent_named(facts.agent),
                max_rounds=self.settings.max_tool_rounds,
                max_handoffs=self.settings.max_handoffs,
                journal=Journal.of(journal),
                messages=messages_of(view, item.run_id),
                token_budget=self.settings.thread_token_budget,
                tokens_used=view.usage.total.input_tokens + view.usage.total.output_tokens,
            )
            usage = await loop.answer(prompt, cancelled)
            stage = "while completing the answer"
            await loop.writer.complete(  # the last agent's writer, after hand-offs
                lambda _text: [*usage, ev.RunCompleted(run_id=item.run_id)],
                run_fields={"status": "completed"},
                ack=True,
            )
            return "completed"
        except AwaitingApproval as waiting:
            assert loop is not None
            return await self._park_for_approval(loop, waiting)
        except errors.RunCancelled:
            return await self._cancelled(attempt, (loop.writer if loop else writer).held_back())
        except (WorkflowFailed, ToolRoundsExceeded, HandoffsExceeded, TokenBudgetReached) as exc:
            # The text streamed so far stays, as with a cancel (the last agent's, after
            # hand-offs).
            held = (loop.writer if loop else writer).held_back()
            return await self._fail(attempt, str(exc), held_back=held)
        except errors.ProviderError as exc:
            return await self._model_error(
                attempt, claim, exc, (loop.writer if loop else writer).held_back()
            )
        except (
            errors.StaleFence,
            errors.ThreadNotFound,
            errors.RunNotFound,
            asyncio.CancelledError,
        ):
            raise
        except Exception as exc:
            if is_redis_fault(exc):
                raise
            return await self._crashed(attempt, claim, exc, stage)

    async def _model_error(
        self, attempt: Attempt, claim: Claim, exc: errors.ProviderError, held: list[ev.Event]
    ) -> str:
        """A failed model call: retried or failed; `held`, the text the model gave before
        its error and not written yet, is written either way (a retry's new attempt
        starts its message afresh)."""
        # Users see the short classified summary; the full error (a provider's
        # body can quote the request) goes to the worker's log only.
        log.warning("run %s attempt %d: %s", attempt.run_id, claim.attempt, exc)
        reason = f"model error: {shown_reason(exc.summary)}"
        return await self._failure(attempt, claim, reason, exc.retryable, held)

    async def _crashed(self, attempt: Attempt, claim: Claim, exc: Exception, stage: str) -> str:
        """An unexpected exception: a failed attempt whose reason names only its class.

        Exception text can carry secrets or provider URLs, so it stays in the
        worker's log with the traceback and never reaches the thread's events.
        """
        log.error(
            "run %s attempt %d: internal error %s",
            attempt.run_id,
            claim.attempt,
            stage,
            exc_info=exc,
        )
        return await self._failure(
            attempt, claim, f"internal error ({type(exc).__name__}) {stage}", retryable=True
        )

    async def _workflow(
        self,
        definition: WorkflowDef,
        attempt: Attempt,
        claim: Claim,
        question: str,
        cancelled: asyncio.Event,
        journal: list[ev.Event],
    ) -> str:
        io = RunIO(
            self.store,
            self.llm,
            self.clock,
            attempt,
            definition.name,
            definition.signals,
            self.settings.flush_ms,
            cancelled,
        )
        try:
            outcome = await run_workflow(definition, io, question, journal, rng=self.rng)
        except errors.RunCancelled:
            # What the interrupted agent turn had not written yet stays with the stopped text.
            return await self._cancelled(attempt, io.held_back)
        except errors.ProviderError as exc:
            return await self._model_error(attempt, claim, exc, io.held_back)
        if isinstance(outcome, Parked):
            try:
                await self.store.append(
                    attempt.fenced(
                        outcome.events,
                        refuse_if_cancelled=True,  # a cancel that raced the park wins
                        run_fields={
                            "status": outcome.status,
                            "owner": "",
                            "lease_until": "0",
                            "waiting_for": outcome.waiting_for,
                        },
                        timer_at_ms=outcome.until_ms,
                        release_thread=outcome.release_thread,
                        signals_seen=None
                        if outcome.signals_seen is None
                        else (outcome.waiting_for, outcome.signals_seen),
                        ack=True,
                    )
                )
            except errors.RunCancelled:
                return await self._cancelled(attempt, [])
            return outcome.status
        events: list[ev.Event] = list(outcome.journal)
        if outcome.reply_text is not None:
            events.append(
                ev.MessageCompleted(
                    run_id=attempt.run_id,
                    message_id=attempt.reply_id,
                    text=outcome.reply_text,
                    agent=attempt.agent,
                )
            )
        events.append(ev.RunCompleted(run_id=attempt.run_id, result=outcome.result))
        await self.store.append(
            attempt.fenced(
                events, run_fields={"status": "completed"}, ack=True, refuse_if_cancelled=False
            )
        )
        return "completed"

    async def _park_for_approval(self, loop: AgentLoop, waiting: AwaitingApproval) -> str:
        """Wait for a person's answer to the call without holding a worker, as a
        workflow waits for a signal: the item is acked, the lease given up, and the
        `approval` signal puts the run back to work (at once if one came meanwhile).

        The run keeps the thread (no `release_thread`): its answer is unfinished, so
        the thread's next message queues behind it rather than answer past it.
        The text streamed so far stays in the reply, which shows `waiting`.
        """
        writer = loop.writer  # the agent's that asked, after hand-offs
        a = writer.attempt
        held = writer.held_back()
        call = waiting.call
        try:
            await self.store.append(
                a.fenced(
                    [*held, *waiting.usage, waiting_event(a.run_id, a.reply_id, call)],
                    refuse_if_cancelled=True,  # a cancel that raced the park wins
                    run_fields={
                        "status": "waiting",
                        "owner": "",
                        "lease_until": "0",
                        "waiting_for": APPROVAL_SIGNAL,
                        "approval_call": call.call_id,
                    },
                    signals_seen=(APPROVAL_SIGNAL, loop.journal.approvals.received),
                    ack=True,
                )
            )
        except errors.RunCancelled:
            return await self._cancelled(a, [*held, *waiting.usage])
        log.info("run %s waits for approval of %s (%s)", a.run_id, call.call_id, call.name)
        return "waiting"

    async def hand_back(self, item: WorkItem, claim: Claim) -> None:
        """Give an unfinished run back at once (shutdown): a fresh work item, no lease."""
        await self.store.append(
            Append(
                thread_id=item.thread_id,
                events=[],
                run_id=item.run_id,
                fence=claim.token,
                refuse_if_finished=True,
                # A new token, so nothing this worker still has in flight can write.
                run_fields={
                    "owner": "",
                    "lease_until": "0",
                    "status": "queued",
                    "token": str(claim.token + 1),
                },
                work=True,
                ack=item.entry_id,
            )
        )

    async def _cancelled(self, attempt: Attempt, held_back: list[ev.Event]) -> str:
        """The partial text stays, with what was still held back, marked cancelled."""
        await self.store.append(
            attempt.fenced(
                [*held_back, ev.RunCancelled(run_id=attempt.run_id, reason="cancelled by request")],
                run_fields={"status": "cancelled"},
                ack=True,
                refuse_if_cancelled=False,
            )
        )
        return "cancelled"

    async def _failure(
        self,
        attempt: Attempt,
        claim: Claim,
        reason: str,
        retryable: bool,
        held_back: list[ev.Event] | None = None,
    ) -> str:
        """`held_back`: the text not written yet, written before the retry or the failure."""
        failures = claim.failures + 1
        if not retryable or failures >= self.settings.max_attempts:
            if retryable:
                reason = f"{reason} (gave up after {failures} attempts)"
            return await self._fail(attempt, reason, failures, held_back=held_back)
        delay = compute_backoff(
            failures,
            base_ms=self.settings.retry_base_ms,
            max_ms=self.settings.retry_max_ms,
            rng=self.rng,
        )
        try:
            await self.store.append(
                attempt.fenced(
                    [
                        *(held_back or []),
                        ev.RunRetrying(
                            run_id=attempt.run_id,
                            attempt=claim.attempt + 1,
                            delay_ms=delay,
                            reason=reason,
                        ),
                    ],
                    refuse_if_cancelled=True,  # a cancel that raced the failure wins
                    run_fields={
                        "status": "retrying",
                        "owner": "",
                        "lease_until": "0",
                        "failures": str(failures),
                    },
                    timer_at_ms=await self.clock.now_ms() + delay,
                    ack=True,
                )
            )
        except errors.RunCancelled:
            # Refused, so not written: the text held back stays with the cancel instead.
            return await self._cancelled(attempt, held_back or [])
        log.info("run %s will retry in %d ms: %s", attempt.run_id, delay, reason)
        return "retrying"

    async def _fail(
        self,
        attempt: Attempt,
        reason: str,
        failures: int | None = None,
        held_back: list[ev.Event] | None = None,
    ) -> str:
        """`held_back`: the text the writer had not written yet, kept before the end."""
        fields = {"status": "failed"}
        if failures is not None:
            fields["failures"] = str(failures)
        await self.store.append(
            attempt.fenced(
                [*(held_back or []), ev.RunFailed(run_id=attempt.run_id, reason=reason)],
                run_fields=fields,
                dead_letter=reason,
                ack=True,
                refuse_if_cancelled=False,
            )
        )
        log.warning("run %s failed: %s", attempt.run_id, reason)
        return "failed"
