"""Workflows: replay, determinism, signals, timeouts, durable sleeps, retry from a step.

The worker runs in burst mode with a clock the test moves: a sleep of hours
is tested by skipping the hours, never by waiting them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import timedelta

import pytest
from pydantic import BaseModel

from consumers.llm.scripted import ScriptedLLM, scripted_reply
from consumers.worker import Worker
from consumers.workflows import RetryPolicy, WorkflowContext, current_step, workflow
from projections.thread_view import ThreadView
from projections.views import ViewStore
from service import commands
from slipstream import errors
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import WORKERS_GROUP, Keyspace
from slipstream.store import EventStore
from tests.waits import until

HOUR_MS = 3600 * 1000
calls: Counter[str] = Counter()
flags: dict[str, object] = {}


class FakeClock:
    def __init__(self, now_ms: int = 1_800_000_000_000) -> None:
        self.ms = now_ms

    def now_ms(self) -> int:
        return self.ms

    def advance(self, **delta: float) -> None:
        self.ms += int(timedelta(**delta).total_seconds() * 1000)


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    calls.clear()
    flags.clear()


def count(name: str, value: object = None) -> object:
    calls[name] += 1
    return value if value is not None else name


class Doubled(BaseModel):
    value: int


def double(x: int) -> Doubled:
    calls["double"] += 1
    return Doubled(value=2 * x)


def flaky(name: str) -> str:
    calls[name] += 1
    if calls[name] < int(flags.get("fail_times", 0)) + 1:  # type: ignore[call-overload]
        raise ConnectionError(f"{name} is down")
    return name


@workflow("test_steps")
async def steps_flow(ctx: WorkflowContext, message: str) -> dict[str, object]:
    a = await ctx.step("a", count, "a")
    doubled = await ctx.step("double", double, 21)
    b = await ctx.step("b", flaky, "b", retry=RetryPolicy(max_attempts=3, base_ms=1000))
    c = await ctx.step("c", count, "c")
    return {"a": a, "double": doubled.value, "b": b, "c": c}


@workflow("test_wait", signals=("go", "other"))
async def wait_flow(ctx: WorkflowContext, message: str) -> dict[str, object]:
    before = await ctx.step("before", count, "before")
    signal = await ctx.wait_for("go", timeout=timedelta(hours=1))
    after = await ctx.step("after", count, "after")
    return {
        "before": before,
        "payload": signal.payload,
        "timed_out": signal.timed_out,
        "after": after,
    }


@workflow("test_sleep")
async def sleep_flow(ctx: WorkflowContext, message: str) -> str:
    start = await ctx.now()
    await ctx.sleep(timedelta(hours=5))
    end = await ctx.now()
    return f"slept {(end - start).total_seconds() / 3600:.0f} h"


@workflow("test_shifty", version=2, signals=("go",))
async def shifty_flow(ctx: WorkflowContext, message: str) -> str:
    await ctx.step(str(flags.get("first_step", "fetch")), count, "first")
    await ctx.wait_for("go")
    await ctx.step("store", count, "store")
    return "done"


@workflow("test_patched", signals=("go",))
async def patched_flow(ctx: WorkflowContext, message: str) -> str:
    if flags.get("deployed") and await ctx.patched("summarize-first"):
        label = await ctx.step("summarize", count, "new path")
    else:
        label = await ctx.step("legacy", count, "old path")
    await ctx.wait_for("go")
    await ctx.step("after", count, "after")
    return str(label)


@workflow("test_gather")
async def gather_flow(ctx: WorkflowContext, message: str) -> list[object]:
    return await ctx.gather(
        ctx.step("left", count, "left"), ctx.step("right", count, "right"), ctx.uuid()
    )


@workflow("test_agents")
async def agents_flow(ctx: WorkflowContext, message: str) -> str:
    first = await ctx.run_agent("assistant", "first turn", name="first")
    await ctx.run_agent("assistant", "second turn", name="second")
    return first


@workflow("test_keys")
async def keys_flow(ctx: WorkflowContext, message: str) -> str:
    return await ctx.step("effect", lambda: current_step().idempotency_key)


@workflow("test_broken")
async def broken_flow(ctx: WorkflowContext, message: str) -> str:
    await ctx.step("prepare", count, "prepare")
    await ctx.step("fragile", flaky, "fragile", retry=RetryPolicy(max_attempts=1))
    return "fixed"


@dataclasses.dataclass
class Harness:
    store: EventStore
    worker: Worker
    clock: FakeClock

    async def start(self, agent: str, content: str = "go") -> tuple[str, str]:
        thread_id, _ = await commands.create_thread(self.store)
        sent = await commands.send_message(self.store, thread_id, content, agent)
        return thread_id, sent.run_id

    async def view(self, thread_id: str) -> ThreadView:
        return await ViewStore(self.store).current(thread_id)

    async def run(self, thread_id: str, run_id: str) -> dict:  # type: ignore[type-arg]
        await self.worker.run_once()
        return (await self.view(thread_id)).runs[run_id].model_dump()


@pytest.fixture
def harness(store: EventStore, settings: Settings) -> Harness:
    clock = FakeClock()
    worker = Worker(store.backend, store, ScriptedLLM(words=12, delay_ms=0), settings, clock=clock)
    return Harness(store, worker, clock)


async def test_replay_skips_completed_steps(harness: Harness) -> None:
    flags["fail_times"] = 1
    thread_id, run_id = await harness.start("test_steps")
    run = await harness.run(thread_id, run_id)
    assert run["status"] == "retrying" and "b is down" in run["reason"]
    assert calls == Counter(a=1, double=1, b=1)

    harness.clock.advance(seconds=1)  # the step's back-off timer is due
    run = await harness.run(thread_id, run_id)

    assert run["status"] == "completed"
    assert run["result"] == {"a": "a", "double": 42, "b": "b", "c": "c"}
    assert calls == Counter(a=1, double=1, b=2, c=1)  # a and double were replayed, not rerun
    steps = {s["name"]: s for s in run["steps"]}
    assert steps["b"]["attempts"] == 2 and steps["b"]["status"] == "completed"
    assert all(s["duration_ms"] is not None for s in run["steps"])


async def test_a_waiting_run_holds_no_worker_and_resumes_on_its_signal(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_wait")
    run = await harness.run(thread_id, run_id)
    assert (run["status"], run["waiting_for"]) == ("waiting", "go")
    part = harness.store.keys.partition(thread_id)
    assert (await harness.store.redis.xpending(part.work, WORKERS_GROUP))["pending"] == 0
    assert (await harness.view(thread_id)).messages[-1].status == "waiting"

    await commands.signal_run(harness.store, run_id, "go", {"ok": True})
    run = await harness.run(thread_id, run_id)
    assert run["status"] == "completed"
    assert run["result"] == {
        "before": "before",
        "payload": {"ok": True},
        "timed_out": False,
        "after": "after",
    }
    assert calls == Counter(before=1, after=1)


async def test_a_signal_sent_before_the_wait_is_kept(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_wait")
    await commands.signal_run(harness.store, run_id, "go", "early")
    run = await harness.run(thread_id, run_id)
    assert run["status"] == "completed" and run["result"]["payload"] == "early"


async def test_a_wait_times_out(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_wait")
    assert (await harness.run(thread_id, run_id))["status"] == "waiting"
    harness.clock.advance(minutes=59)
    assert (await harness.run(thread_id, run_id))["status"] == "waiting"
    harness.clock.advance(minutes=1)
    run = await harness.run(thread_id, run_id)
    assert run["status"] == "completed"
    assert (run["result"]["timed_out"], run["result"]["payload"]) == (True, None)


async def test_signals_a_run_will_never_take_are_refused(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_wait")
    with pytest.raises(errors.SignalRefused, match="does not wait for 'nope'"):
        await commands.signal_run(harness.store, run_id, "nope", None)
    _, chat_run = await harness.start("assistant")
    with pytest.raises(errors.SignalRefused, match="a chat run takes only the 'approval' signal"):
        await commands.signal_run(harness.store, chat_run, "go", None)
    await commands.signal_run(harness.store, run_id, "go", 1)
    await harness.run(thread_id, run_id)
    with pytest.raises(errors.RunFinished):
        await commands.signal_run(harness.store, run_id, "go", 2)


async def test_durable_sleep_parks_on_a_timer(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_sleep")
    run = await harness.run(thread_id, run_id)
    assert (run["status"], run["waiting_for"]) == ("waiting", "timer")
    part = harness.store.keys.partition(thread_id)
    due = await harness.store.redis.zscore(part.timers, run_id)
    assert due == harness.clock.ms + 5 * HOUR_MS
    harness.clock.advance(hours=4, minutes=59)
    assert (await harness.run(thread_id, run_id))["status"] == "waiting"
    harness.clock.advance(minutes=1)
    run = await harness.run(thread_id, run_id)
    assert (run["status"], run["result"]) == ("completed", "slept 5 h")


async def test_code_that_disagrees_with_its_journal_fails_clearly(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_shifty")
    await harness.run(thread_id, run_id)
    flags["first_step"] = "download"  # the step was renamed while the run waited
    await commands.signal_run(harness.store, run_id, "go", None)
    run = await harness.run(thread_id, run_id)
    assert run["status"] == "failed"
    reason = run["reason"]
    assert "operation 1" in reason and "'download'" in reason and "'fetch'" in reason
    assert "code version 2" in reason and "journal version 2" in reason


async def test_patched_keeps_old_runs_on_the_old_path(harness: Harness) -> None:
    old_thread, old_run = await harness.start("test_patched")
    await harness.run(old_thread, old_run)  # parked before the change
    flags["deployed"] = True
    new_thread, new_run = await harness.start("test_patched")
    await harness.run(new_thread, new_run)
    for run_id in (old_run, new_run):
        await commands.signal_run(harness.store, run_id, "go", None)
    await harness.worker.run_once()
    old = (await harness.view(old_thread)).runs[old_run]
    new = (await harness.view(new_thread)).runs[new_run]
    assert (old.status, old.result) == ("completed", "old path")
    assert (new.status, new.result) == ("completed", "new path")
    assert calls == Counter({"old path": 1, "new path": 1, "after": 2})


async def test_gather_runs_steps_side_by_side(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_gather")
    run = await harness.run(thread_id, run_id)
    assert run["status"] == "completed"
    left, right, made = run["result"]
    assert (left, right, len(made)) == ("left", "right", 36)
    by_position = sorted(run["steps"], key=lambda s: s["op"])
    assert [(s["op"], s["name"]) for s in by_position] == [(1, "left"), (2, "right"), (3, "uuid")]


async def test_agent_turns_stream_into_messages_of_their_own(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_agents")
    await harness.run(thread_id, run_id)
    view = await harness.view(thread_id)
    replies = [m for m in view.messages if m.role == "assistant"]
    assert [m.content for m in replies] == [
        scripted_reply("first turn", 12),
        scripted_reply("second turn", 12),
    ]
    assert all(m.status == "completed" and m.run_id == run_id for m in replies)
    assert view.runs[run_id].result == scripted_reply("first turn", 12)


async def test_steps_get_a_stable_idempotency_key(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_keys")
    run = await harness.run(thread_id, run_id)
    assert run["result"] == f"{run_id}:1:effect"


async def test_a_failed_run_retries_from_its_failed_step(harness: Harness) -> None:
    flags["fail_times"] = 1
    thread_id, run_id = await harness.start("test_broken")
    run = await harness.run(thread_id, run_id)
    assert run["status"] == "failed"
    assert (
        "step 'fragile' failed after 1 attempt(s): ConnectionError: fragile is down"
        in run["reason"]
    )
    await commands.restart_run(harness.store, run_id)
    run = await harness.run(thread_id, run_id)
    assert (run["status"], run["result"]) == ("completed", "fixed")
    assert calls == Counter(prepare=1, fragile=2)


@workflow("test_short_sleep")
async def short_sleep_flow(ctx: WorkflowContext, message: str) -> str:
    await ctx.sleep(0.3)
    return "awake"


async def test_timers_fire_on_time_with_the_real_clock(
    real_backend: Backend, settings: Settings
) -> None:
    """One real-time check of the sleep path: a worker loop, the system clock."""
    store = EventStore(real_backend, Keyspace(settings.partitions))
    worker = Worker(real_backend, store, ScriptedLLM(), settings)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        thread_id, _ = await commands.create_thread(store)
        sent = await commands.send_message(store, thread_id, "nap", "test_short_sleep")

        async def completed() -> bool:
            view = await ViewStore(store).current(thread_id)
            return view.runs[sent.run_id].status == "completed"

        await until(completed, within=5)
        events = await store.read(thread_id)
        waited = next(s for s in events if s.event.type == "run.waiting")
        resumed = next(s for s in events if s.event.type == "run.resumed")
        late_ms = int(resumed.id.split("-")[0]) - waited.event.until_ms  # type: ignore[union-attr]
        assert 0 <= late_ms < 1000
    finally:
        stop.set()
        await task


async def test_a_resent_signal_with_its_id_is_kept_once(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_wait")
    for _ in range(2):
        await commands.signal_run(harness.store, run_id, "go", "once", signal_id="click-1")
    events = [s.event.type for s in await harness.store.read(thread_id)]
    assert events.count("signal.received") == 1


async def send_go_now(payload: str) -> str:
    """A step that signals its own run: a signal arriving while the run is busy."""
    store, run_id = flags["store"], flags["run_id"]
    await commands.signal_run(store, run_id, "go", payload)  # type: ignore[arg-type]
    return payload


@workflow("test_signal_while_busy", signals=("go",))
async def busy_flow(ctx: WorkflowContext, message: str) -> object:
    await ctx.step("meanwhile", send_go_now, "mid-run")
    return (await ctx.wait_for("go")).payload


async def test_a_signal_sent_while_the_run_is_busy_is_not_lost(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_signal_while_busy")
    flags.update(store=harness.store, run_id=run_id)
    run = await harness.run(thread_id, run_id)
    assert (run["status"], run["result"]) == ("completed", "mid-run")


async def test_a_timer_then_a_signal_make_one_work_item(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_wait")
    await harness.run(thread_id, run_id)  # parked, with a one-hour timeout
    harness.clock.advance(hours=1)
    await harness.worker._fire_due_timers()
    await commands.signal_run(harness.store, run_id, "go", "late")
    part = harness.store.keys.partition(thread_id)
    assert await harness.store.redis.xlen(part.work) == 1
    run = await harness.run(thread_id, run_id)
    assert run["status"] == "completed" and run["attempt"] == 2


async def cancel_myself() -> None:
    store, run_id, thread_id = flags["store"], flags["run_id"], flags["thread_id"]
    key = store.keys.partition(thread_id).run(run_id)  # type: ignore[attr-defined]
    await store.redis.hset(key, "cancel", "1")  # type: ignore[attr-defined]


@workflow("test_cancel_before_park", signals=("go",))
async def cancel_before_park_flow(ctx: WorkflowContext, message: str) -> object:
    await ctx.step("cancelled meanwhile", cancel_myself)
    return (await ctx.wait_for("go")).payload


async def test_a_cancel_that_races_a_park_wins(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_cancel_before_park")
    flags.update(store=harness.store, run_id=run_id, thread_id=thread_id)
    run = await harness.run(thread_id, run_id)
    assert run["status"] == "cancelled"


async def two_steps(ctx: WorkflowContext, name: str) -> str:
    await ctx.step(f"fetch {name}", count, name)
    return str(await ctx.step(f"parse {name}", count, name))


@workflow("test_gather_misuse")
async def gather_misuse_flow(ctx: WorkflowContext, message: str) -> object:
    return await ctx.gather(two_steps(ctx, "a"), two_steps(ctx, "b"))


async def test_gather_takes_one_operation_per_argument(harness: Harness) -> None:
    thread_id, run_id = await harness.start("test_gather_misuse")
    run = await harness.run(thread_id, run_id)
    assert run["status"] == "failed"
    assert "one operation per argument" in run["reason"]


def test_deployments_add_workflows_by_module() -> None:
    from consumers import workflows
    from consumers.workflows.registry import load_modules

    load_modules(("bench.noop_workflows",))
    assert {"noop4", "noop5"} <= set(workflows.names())
    with pytest.raises(ImportError, match=r"SLIPSTREAM_WORKFLOWS names 'no\.such\.module'"):
        load_modules(("no.such.module",))
