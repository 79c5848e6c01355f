"""A call redis-py sends again after its connection dropped writes once.

redis-py resends a command whose connection failed, even when Redis had
applied it and only the reply was lost. Each test sends the very same script
call twice, with identical arguments, as that resend does, and shows the
second one changed nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from redis.commands.core import AsyncScript

from consumers.llm.scripted import ScriptedLLM
from consumers.worker import Worker
from consumers.workflows.context import WorkflowContext
from consumers.workflows.registry import workflow
from projections.views import ViewStore
from service import commands
from slipstream import events as ev
from slipstream.batching import ScriptBatch
from slipstream.config import Settings
from slipstream.leases import Leases
from slipstream.store import EventStore


def sent_twice(script: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The script applied, its reply lost, and the same call sent again."""

    async def twice(**call: Any) -> Any:
        await script(**call)
        return await script(**call)

    return twice


def batch_sends_twice(batch: ScriptBatch, script: AsyncScript) -> Callable[..., Awaitable[Any]]:
    """As `sent_twice`, for calls that go through the process's script batch (a batch
    whose connection drops is sent again whole, by redis-py's retry)."""
    real = batch.call

    async def call(called: AsyncScript, keys: Sequence[str], args: Sequence[Any], **kw: Any) -> Any:
        if called is script:
            await real(called, keys, args, **kw)
        return await real(called, keys, args, **kw)

    return call


async def count(store: EventStore, thread_id: str, kind: type[ev.Event], run_id: str) -> int:
    return sum(
        1
        for s in await store.read(thread_id)
        if isinstance(s.event, kind) and getattr(s.event, "run_id", None) == run_id
    )


async def work_items(store: EventStore, thread_id: str, run_id: str) -> int:
    entries = await store.redis.xrange(store.keys.partition(thread_id).work)
    return sum(1 for _, fields in entries if fields.get("run") == run_id)


async def test_a_resent_claim_takes_no_second_attempt(
    store: EventStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hi", "assistant")
    leases = Leases(store.backend, store.keys, lease_ms=settings.lease_ms)
    real = leases._claim
    monkeypatch.setattr(leases, "_claim", sent_twice(real))

    claim = await leases.claim(sent.run_id, thread_id, "w:1:a", "1-1")
    assert (claim.outcome, claim.token, claim.attempt, claim.failures) == ("OK", 1, 1, 0)
    state = await store.run_state(sent.run_id, thread_id)
    assert (state["token"], state["attempt"], state.get("failures", "0")) == ("1", "1", "0")

    # A later claim by the same worker is a takeover all the same, and counts.
    monkeypatch.setattr(leases, "_claim", real)
    await store.redis.hset(store.keys.partition(thread_id).run(sent.run_id), "lease_until", 0)
    again = await leases.claim(sent.run_id, thread_id, "w:1:a", "1-1")
    assert (again.token, again.attempt, again.failures) == (2, 2, 1)


async def test_a_resent_regenerate_starts_one_run(
    store: EventStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hi", "assistant")
    await Worker(store.backend, store, ScriptedLLM(words=8, delay_ms=0), settings).run_once()
    monkeypatch.setattr(store.batch, "call", batch_sends_twice(store.batch, store._append))

    new_run, _ = await commands.regenerate(store, ViewStore(store), sent.run_id)
    assert await count(store, thread_id, ev.RunRequested, new_run) == 1
    assert await work_items(store, thread_id, new_run) == 1


async def test_a_resent_cancel_is_written_once_and_answered(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = await commands.create_thread(store)
    held = await commands.send_message(store, thread_id, "first", "assistant")
    queued = await commands.send_message(store, thread_id, "second", "assistant")
    leases = Leases(store.backend, store.keys, lease_ms=60_000)
    assert (await leases.claim(held.run_id, thread_id, "w:1:a", "1-1")).outcome == "OK"
    monkeypatch.setattr(store.batch, "call", batch_sends_twice(store.batch, store._append))

    on_the_spot = await commands.cancel_run(store, queued.run_id)
    assert (on_the_spot.status, on_the_spot.was) == ("cancelled", "queued")
    assert await count(store, thread_id, ev.RunCancelled, queued.run_id) == 1
    requested = await commands.cancel_run(store, held.run_id)
    assert (requested.status, requested.was) == ("cancel_requested", "running")
    assert await count(store, thread_id, ev.RunCancelRequested, held.run_id) == 1


async def test_a_resent_retry_queues_the_run_once(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hi", "assistant")
    await commands.cancel_run(store, sent.run_id)
    before = await work_items(store, thread_id, sent.run_id)
    monkeypatch.setattr(store.batch, "call", batch_sends_twice(store.batch, store._append))

    assert await commands.restart_run(store, sent.run_id) == "cancelled"
    assert await count(store, thread_id, ev.RunRestarted, sent.run_id) == 1
    assert await work_items(store, thread_id, sent.run_id) == before + 1


@workflow("test_resent_signal_flow", signals=("approve",))
async def approval_flow(ctx: WorkflowContext, message: str) -> object:
    return (await ctx.wait_for("approve")).payload


async def test_a_resent_signal_is_kept_once(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "go", "test_resent_signal_flow")
    monkeypatch.setattr(store.batch, "call", batch_sends_twice(store.batch, store._append))

    assert await commands.signal_run(store, sent.run_id, "approve", {"ok": True}) == "queued"
    assert await count(store, thread_id, ev.SignalReceived, sent.run_id) == 1
    state = await store.run_state(sent.run_id, thread_id)
    assert state["signals:approve"] == "1"
