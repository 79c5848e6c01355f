"""A Redis fault in the middle of a run leaves the attempt to its lease; it is not a failure.

A write that times out may be applied all the same (a paused Redis applies
what is in its socket buffer when it resumes), so the attempt must not go on
to write a failure or a retry of its own: it stops, the work item stays
pending, and once the lease lapses a worker takes the run over and finishes
it. Faults are injected into one append of a run, on a real redis-server,
both as a write that never arrived and as one that was applied but whose
reply was lost.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from consumers.llm.scripted import ScriptedLLM, scripted_reply
from consumers.worker import Worker
from consumers.workflows import context
from consumers.workflows.context import RetryPolicy, WorkflowContext
from consumers.workflows.registry import workflow
from projections.views import ViewStore
from service import commands
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import WORKERS_GROUP
from slipstream.store import Append, Appended, EventStore
from tests.waits import until

WORDS = 20
SECRET = "https://payments.example/v1/charge?api_key=sk-live-secret-42"


@pytest.fixture
def store(real_backend: Backend, settings: Settings) -> EventStore:
    return EventStore.from_settings(real_backend, settings)


@pytest.fixture
def quick(settings: Settings) -> Settings:
    # A delta flushed at each sentence end, so an answer writes deltas before it completes.
    return dataclasses.replace(settings, lease_ms=300, flush_ms=1)


# A model slow enough for deltas mid-answer: one that answers at once writes its
# whole answer with the completion, and no delta of its own.
MID_ANSWER_DELAY_MS = 2


class OneFault:
    """Raises a Redis timeout from the first append that `matches`, once."""

    def __init__(
        self, store: EventStore, matches: Callable[[Append], bool], *, applied: bool
    ) -> None:
        self.real = store.append
        self.matches = matches
        self.applied = applied  # the write went through, only its reply was lost
        self.fired = 0

    async def __call__(self, request: Append) -> Appended:
        if not self.fired and self.matches(request):
            self.fired += 1
            if self.applied:
                await self.real(request)
            raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
        return await self.real(request)


def mid_answer(request: Append) -> bool:
    """A delta written before its message completes."""
    kinds = {type(e) for e in request.events}
    return ev.MessageDelta in kinds and ev.MessageCompleted not in kinds


def has(kind: type[ev.Event], step: str | None = None) -> Callable[[Append], bool]:
    def matches(request: Append) -> bool:
        return any(
            isinstance(e, kind) and (step is None or getattr(e, "step", None) == step)
            for e in request.events
        )

    return matches


async def types_of(store: EventStore, thread_id: str) -> list[str]:
    return [s.event.type for s in await store.read(thread_id)]


async def take_over(store: EventStore, worker: Worker, thread_id: str, lease_ms: int) -> None:
    """Once the item has been idle for the lease time, a worker takes the run over."""
    part = store.keys.partition(thread_id)

    async def lease_lapsed() -> bool:
        pending = await store.redis.xpending_range(part.work, WORKERS_GROUP, "-", "+", 1)
        return bool(pending) and pending[0]["time_since_delivered"] >= lease_ms

    await until(lease_lapsed)
    await worker.run_once()


@pytest.mark.parametrize("applied", [False, True], ids=["lost", "applied"])
async def test_a_timed_out_delta_leaves_the_chat_run_to_a_takeover(
    store: EventStore,
    quick: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    applied: bool,
) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hello there", "assistant")
    fault = OneFault(store, mid_answer, applied=applied)
    monkeypatch.setattr(store, "append", fault)
    llm = ScriptedLLM(words=WORDS, delay_ms=MID_ANSWER_DELAY_MS)
    worker = Worker(store.backend, store, llm, quick)

    with caplog.at_level(logging.WARNING, "slipstream.worker"):
        await worker.run_once()
    assert fault.fired == 1
    assert "Redis fault" in caplog.text and "left for takeover" in caplog.text
    # The attempt wrote nothing of its own about the fault: no retry, no failure.
    state = await store.run_state(sent.run_id, thread_id)
    assert (state["status"], state.get("failures", "0")) == ("running", "0")
    assert not {"run.retrying", "run.failed"} & set(await types_of(store, thread_id))

    await take_over(store, worker, thread_id, quick.lease_ms)
    view = await ViewStore(store).current(thread_id)
    assert view.runs[sent.run_id].status == "completed"
    assert view.messages[-1].content == scripted_reply("hello there", WORDS)
    state = await store.run_state(sent.run_id, thread_id)
    # The takeover counts the lost attempt, as it does for a worker that died.
    assert (state["attempt"], state["failures"]) == ("2", "1")
    assert "run.retrying" not in await types_of(store, thread_id)


async def test_a_run_left_by_a_redis_fault_can_still_be_cancelled(
    store: EventStore, quick: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hello there", "assistant")
    fault = OneFault(store, mid_answer, applied=True)
    monkeypatch.setattr(store, "append", fault)
    llm = ScriptedLLM(words=WORDS, delay_ms=MID_ANSWER_DELAY_MS)
    worker = Worker(store.backend, store, llm, quick)
    await worker.run_once()
    assert fault.fired == 1

    outcome = await commands.cancel_run(store, sent.run_id)
    assert outcome.status == "cancel_requested"
    await take_over(store, worker, thread_id, quick.lease_ms)
    view = await ViewStore(store).current(thread_id)
    assert view.runs[sent.run_id].status == "cancelled"
    types = await types_of(store, thread_id)
    assert types.count("run.cancelled") == 1 and "run.failed" not in types


def shout(text: str) -> str:
    return text.upper()


@workflow("test_redis_fault_flow")
async def fault_flow(ctx: WorkflowContext, message: str) -> str:
    loud = await ctx.step("shout", shout, message, retry=RetryPolicy(max_attempts=1))
    return await ctx.run_agent("assistant", f"answer {loud}")


@pytest.mark.parametrize(
    ("where", "matches"),
    [
        ("the step's start", has(ev.StepStarted, "shout")),
        ("the step's result", has(ev.StepCompleted, "shout")),
        ("the agent turn's deltas", mid_answer),
    ],
)
@pytest.mark.parametrize("applied", [False, True], ids=["lost", "applied"])
async def test_a_redis_fault_in_the_journal_does_not_fail_the_workflow(
    store: EventStore,
    quick: Settings,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    matches: Callable[[Append], bool],
    applied: bool,
) -> None:
    # Every step's start is journaled on its own, so a fault can meet it.
    monkeypatch.setattr(context, "QUICK_STEP_S", 0.0)
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "go", "test_redis_fault_flow")
    fault = OneFault(store, matches, applied=applied)
    monkeypatch.setattr(store, "append", fault)
    llm = ScriptedLLM(words=WORDS, delay_ms=MID_ANSWER_DELAY_MS)
    worker = Worker(store.backend, store, llm, quick)

    await worker.run_once()
    assert fault.fired == 1, where
    state = await store.run_state(sent.run_id, thread_id)
    assert state["status"] == "running", where
    assert not {"step.failed", "run.retrying", "run.failed"} & set(
        await types_of(store, thread_id)
    ), where

    await take_over(store, worker, thread_id, quick.lease_ms)
    view = await ViewStore(store).current(thread_id)
    assert view.runs[sent.run_id].status == "completed", where
    assert view.messages[-1].content == scripted_reply("answer GO", WORDS)
    assert "step.failed" not in await types_of(store, thread_id)


def charge(amount: int) -> str:
    raise RuntimeError(f"card declined by {SECRET}")


@workflow("test_leaky_step_flow")
async def leaky_flow(ctx: WorkflowContext, message: str) -> str:
    return await ctx.step("charge", charge, 5, retry=RetryPolicy(max_attempts=1))


async def test_a_failing_step_keeps_urls_out_of_the_events_and_the_dead_letters(
    store: EventStore, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "go", "test_leaky_step_flow")
    worker = Worker(store.backend, store, ScriptedLLM(words=WORDS, delay_ms=0), settings)
    with caplog.at_level(logging.WARNING, "slipstream.workflows"):
        await worker.run_once()

    view = await ViewStore(store).current(thread_id)
    run = view.runs[sent.run_id]
    assert run.status == "failed"
    assert run.reason == (
        "step 'charge' failed after 1 attempt(s): RuntimeError: card declined by <url>"
    )
    stored = [s.event for s in await store.read(thread_id)]
    [failed] = [e for e in stored if isinstance(e, ev.StepFailed)]
    assert failed.error == "RuntimeError: card declined by <url>"
    dead = await store.redis.xrange(store.keys.partition(thread_id).dead)
    assert [fields["reason"] for _, fields in dead] == [run.reason]
    assert not any("sk-live-secret" in e.model_dump_json() for e in stored)
    assert "sk-live-secret" in caplog.text  # the whole text is in the worker's log
