"""A run that cannot be handled ends at the attempt bound: failed, dead-lettered, thread freed.

Faults are injected here (a thread view that cannot be read, a prompt builder
that raises, a worker that dies mid-run), on a real redis-server.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest

from consumers import runner
from consumers.llm.scripted import ScriptedLLM, scripted_reply
from consumers.worker import Worker
from projections.thread_view import ThreadView
from projections.views import ViewStore
from service import commands
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ProviderError
from slipstream.keys import WORKERS_GROUP
from slipstream.store import EventStore
from tests.fake_llm import FlakyLLM
from tests.harness import running_system
from tests.waits import until

SECRET = "https://provider.example/v1?key=sk-secret-123"


def two_attempts(settings: Settings) -> Settings:
    return dataclasses.replace(settings, max_attempts=2, retry_base_ms=1, retry_max_ms=2)


@pytest.fixture
def store(real_backend: Backend, settings: Settings) -> EventStore:
    return EventStore.from_settings(real_backend, settings)


async def dead_letters(store: EventStore, thread_id: str) -> list[dict[str, str]]:
    entries = await store.redis.xrange(store.keys.partition(thread_id).dead)
    return [fields for _, fields in entries]


async def test_a_thread_view_that_cannot_be_read_fails_the_run_at_the_bound(
    store: EventStore,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hello", "assistant")
    # As a stored view that does not parse did before views rebuilt themselves; injected
    # here, so the run's bound is what is tested, whatever the views do.
    # Both ways a run gets its view: read on its own, or from what its claim read.
    real, real_from = ViewStore.current, ViewStore.current_from

    async def unreadable(self: ViewStore, thread: str, *args: object, **kw: object) -> ThreadView:
        raise ValueError(f"view does not parse: {SECRET}")

    monkeypatch.setattr(ViewStore, "current", unreadable)
    monkeypatch.setattr(ViewStore, "current_from", unreadable)
    with caplog.at_level(logging.ERROR, "slipstream.runner"):
        worker = Worker(
            store.backend, store, ScriptedLLM(words=20, delay_ms=0), two_attempts(settings)
        )
        await worker.run_once()
    monkeypatch.setattr(ViewStore, "current", real)
    monkeypatch.setattr(ViewStore, "current_from", real_from)

    state = await store.run_state(sent.run_id, thread_id)
    assert (state["status"], state["attempt"], state["failures"]) == ("failed", "2", "2")
    view = await ViewStore(store).current(thread_id)
    run = view.runs[sent.run_id]
    assert run.status == "failed"
    assert run.reason == (
        "internal error (ValueError) while preparing the run (gave up after 2 attempts)"
    )
    [dead] = await dead_letters(store, thread_id)
    assert (dead["run"], dead["reason"]) == (sent.run_id, run.reason)
    assert await store.redis.hget(store.keys.partition(thread_id).active, thread_id) is None
    # The exception's text stays in the log, never in the thread.
    events = [s.event.model_dump_json() for s in await store.read(thread_id)]
    assert not any("sk-secret" in e for e in events)
    assert "sk-secret" in caplog.text


async def test_a_corrupt_stored_view_never_makes_its_run_loop(
    store: EventStore, settings: Settings
) -> None:
    """Whether the view is rebuilt (the run answers) or not (it fails at the bound), it ends."""
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hello", "assistant")
    view_key = store.keys.partition(thread_id).view(thread_id)
    await store.redis.hset(view_key, mapping={"view": '{"id": "' + SECRET, "last": "0-1"})
    worker = Worker(store.backend, store, ScriptedLLM(words=20, delay_ms=0), two_attempts(settings))
    await worker.run_once()  # returns only once nothing is left to run
    state = await store.run_state(sent.run_id, thread_id)
    assert state["status"] in ("completed", "failed") and int(state["attempt"]) <= 2
    dead = [d["run"] for d in await dead_letters(store, thread_id)]
    assert dead == ([sent.run_id] if state["status"] == "failed" else [])
    assert await store.redis.hget(store.keys.partition(thread_id).active, thread_id) is None


async def test_a_raising_prompt_builder_fails_its_run_and_the_next_one_is_answered(
    store: EventStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = await commands.create_thread(store)
    poisoned = await commands.send_message(store, thread_id, "poison", "assistant")
    queued = await commands.send_message(store, thread_id, "after it", "assistant")
    calls: list[str] = []
    real = runner.context_for

    def context_for(view: ThreadView, run_id: str, budget: int) -> object:
        calls.append(run_id)
        if run_id == poisoned.run_id:
            raise KeyError(SECRET)
        return real(view, run_id, budget)

    monkeypatch.setattr(runner, "context_for", context_for)
    worker = Worker(store.backend, store, ScriptedLLM(words=20, delay_ms=0), two_attempts(settings))
    await worker.run_once()

    view = await ViewStore(store).current(thread_id)
    assert calls == [poisoned.run_id, poisoned.run_id, queued.run_id]
    assert view.runs[poisoned.run_id].status == "failed"
    assert view.runs[poisoned.run_id].reason == (
        "internal error (KeyError) while building the prompt (gave up after 2 attempts)"
    )
    assert [d["run"] for d in await dead_letters(store, thread_id)] == [poisoned.run_id]
    assert view.runs[queued.run_id].status == "completed"
    assert view.messages[-1].content == scripted_reply("after it", 20)


class WorkerDied(BaseException):
    """Unwinds the worker as a crash would, leaving the lease and the pending item behind."""


async def test_a_run_that_keeps_killing_its_worker_ends_after_the_bound(
    store: EventStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = dataclasses.replace(two_attempts(settings), lease_ms=200)
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "deadly", "assistant")
    part = store.keys.partition(thread_id)

    def crash(view: ThreadView, run_id: str, budget: int) -> object:
        raise WorkerDied

    monkeypatch.setattr(runner, "context_for", crash)

    async def lease_lapsed() -> bool:
        pending = await store.redis.xpending_range(part.work, WORKERS_GROUP, "-", "+", 1)
        return bool(pending) and pending[0]["time_since_delivered"] >= quick.lease_ms

    crashes = 0
    for _ in range(5):  # a bound on the test itself: the run must end well before it
        state = await store.run_state(sent.run_id, thread_id)
        if state["status"] == "failed":
            break
        worker = Worker(store.backend, store, ScriptedLLM(words=20, delay_ms=0), quick)
        try:
            await worker.run_once()
        except WorkerDied:
            crashes += 1
            await until(lease_lapsed)
    state = await store.run_state(sent.run_id, thread_id)
    assert (state["status"], state["failures"], crashes) == ("failed", "2", 2)
    [dead] = await dead_letters(store, thread_id)
    assert dead["reason"] == "gave up after 2 attempts: its worker was lost each time"
    assert await store.redis.xlen(part.work) == 0


async def test_a_model_error_is_kept_without_the_urls_in_it(
    store: EventStore, settings: Settings
) -> None:
    failure = ProviderError(f"anthropic: HTTPStatusError: 404 for url {SECRET}", retryable=False)
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hello", "assistant")
    await Worker(store.backend, store, FlakyLLM([failure]), settings).run_once()
    view = await ViewStore(store).current(thread_id)
    assert (
        view.runs[sent.run_id].reason
        == "model error: anthropic: HTTPStatusError: 404 for url <url>"
    )


async def test_in_the_running_service_a_poisoned_run_fails_and_the_queue_moves_on(
    real_backend: Backend, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runner.context_for

    def context_for(view: ThreadView, run_id: str, budget: int) -> object:
        asked = view.message(view.runs[run_id].message_id)
        if asked is not None and asked.content == "poison":
            raise RuntimeError(SECRET)
        return real(view, run_id, budget)

    monkeypatch.setattr(runner, "context_for", context_for)
    async with running_system(real_backend, two_attempts(settings)) as system:
        thread_id = await system.new_thread()
        first = await system.send(thread_id, "poison")
        second = await system.send(thread_id, "after it")
        view = await system.wait_for_run(thread_id, second["run_id"])
        dead = await dead_letters(system.runtime.store, thread_id)
    assert view["runs"][first["run_id"]]["status"] == "failed"
    assert view["runs"][first["run_id"]]["attempt"] == 2
    assert view["runs"][second["run_id"]]["status"] == "completed"
    assert [d["run"] for d in dead] == [first["run_id"]]
    assert "RuntimeError" in dead[0]["reason"] and "sk-secret" not in dead[0]["reason"]
