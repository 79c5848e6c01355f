"""Compaction (projections/compaction.py): the deltas of old completed answers leave
the thread stream, and everything that reads the thread reads the same.

The plan is tested on plain event lists; the rest on a real redis-server with the
real web, worker and projector: the history API, the stored view and a fold from
scratch, a websocket resuming from a position that was compacted away, the AI SDK
and AG-UI translations of the compacted history, the projector's own loop, the
default (off), a delete, and Redis Cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from projections import compaction
from projections.compaction import REWRITE_MAX_ENTRIES, Compactor, folds_the_same, plan
from projections.projector import Projector
from projections.thread_view import ThreadView, fold, stream_ms
from service.agui_events import Translation
from service.ui_message_stream import Answer
from slipstream import codec
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ConfigError
from slipstream.keys import Keyspace, new_id
from slipstream.store import EventStore, Stored
from tests.harness import System, frames_until, running_system
from tests.test_client_fold import comparable, frames, js_fold
from tests.test_delete_thread import lasting, traces
from tests.waits import until

# ---------------------------------------------------------------- the plan, no Redis


def _stream(*events: ev.Event) -> list[Stored]:
    """Events as stored, one a millisecond from 1000 ms."""
    return [Stored(f"{1000 + n}-0", event) for n, event in enumerate(events)]


def _answer(run: str, reply: str, words: list[str], attempt: int = 1) -> list[ev.Event]:
    return [
        ev.MessageDelta(run_id=run, message_id=reply, seq=n, text=word, attempt=attempt, agent=None)
        for n, word in enumerate(words, start=1)
    ]


def _thread() -> list[ev.Event]:
    return [
        ev.ThreadCreated(title="plan"),
        ev.MessageSent(message_id="m1", content="hi", run_id="r1"),
        ev.RunRequested(run_id="r1", message_id="m1", reply_id="a1", agent="assistant"),
        ev.RunStarted(run_id="r1", attempt=1, worker="w", token=1),
    ]


def _ids(stored: list[Stored], kind: type, **match: Any) -> list[str]:
    return [
        s.id
        for s in stored
        if isinstance(s.event, kind) and all(getattr(s.event, k) == v for k, v in match.items())
    ]


def test_an_old_answer_keeps_its_first_delta_and_its_completion() -> None:
    stored = _stream(
        *_thread(),
        *_answer("r1", "a1", ["one ", "two ", "three"]),
        ev.MessageCompleted(run_id="r1", message_id="a1", text="one two three", seq=3),
        ev.RunCompleted(run_id="r1"),
    )
    found = plan(stored, cutoff_ms=10_000)
    assert found.drop == _ids(stored, ev.MessageDelta)[1:]
    assert found.next_completed_ms is None
    assert folds_the_same("t1", "s", stored, found.drop)
    kept = fold(ThreadView.empty("t1", "s"), [s for s in stored if s.id not in found.drop])
    assert kept.version == len(stored) and kept.messages[1].seq == 3
    assert kept.runs["r1"].first_token_at == stream_ms(_ids(stored, ev.MessageDelta)[0])


def test_a_streaming_a_recent_and_an_unsequenced_answer_are_left_whole() -> None:
    stored = _stream(
        *_thread(),
        *_answer("r1", "a1", ["old ", "one"]),
        ev.MessageCompleted(run_id="r1", message_id="a1", text="old one"),  # before `seq`
        ev.RunCompleted(run_id="r1"),
        ev.MessageSent(message_id="m2", content="again", run_id="r2"),
        ev.RunRequested(run_id="r2", message_id="m2", reply_id="a2", agent="assistant"),
        ev.RunStarted(run_id="r2", attempt=1, worker="w", token=2),
        *_answer("r2", "a2", ["recent ", "one"]),
        ev.MessageCompleted(run_id="r2", message_id="a2", text="recent one", seq=2),
        ev.RunCompleted(run_id="r2"),
        ev.MessageSent(message_id="m3", content="more", run_id="r3"),
        ev.RunRequested(run_id="r3", message_id="m3", reply_id="a3", agent="assistant"),
        ev.RunStarted(run_id="r3", attempt=1, worker="w", token=3),
        *_answer("r3", "a3", ["still ", "streaming"]),
    )
    recent = _ids(stored, ev.MessageCompleted, message_id="a2")[0]
    found = plan(stored, cutoff_ms=stream_ms(recent) - 1)
    assert found.drop == []
    assert found.next_completed_ms == stream_ms(recent)
    assert plan(stored, cutoff_ms=10_000).drop == _ids(stored, ev.MessageDelta, run_id="r2")[1:]


def test_a_retried_answer_keeps_its_first_attempt_and_folds_the_same() -> None:
    stored = _stream(
        *_thread(),
        *_answer("r1", "a1", ["lost ", "words"]),
        ev.RunRetrying(run_id="r1", attempt=2, delay_ms=10, reason="model failed"),
        ev.RunStarted(run_id="r1", attempt=2, worker="w", token=2),
        *_answer("r1", "a1", ["kept ", "words ", "here"], attempt=2),
        ev.MessageCompleted(run_id="r1", message_id="a1", text="kept words here", seq=3),
        ev.RunCompleted(run_id="r1"),
    )
    found = plan(stored, cutoff_ms=10_000)
    second = [s.id for s in stored if isinstance(s.event, ev.MessageDelta) and s.event.attempt == 2]
    assert found.drop == second[1:]
    assert folds_the_same("t1", "s", stored, found.drop)


def test_the_pages_fold_reads_a_compacted_stream_as_the_server_does() -> None:
    """static/js/fold.js, from a snapshot at any point of the whole stream (a page that
    saw part of an answer, then came back) and the compacted rest, ends at the view
    the whole stream folds to, version and seq included."""
    stored = _stream(
        *_thread(),
        *_answer("r1", "a1", ["lost ", "words"]),
        ev.RunRetrying(run_id="r1", attempt=2, delay_ms=10, reason="model failed"),
        ev.RunStarted(run_id="r1", attempt=2, worker="w", token=2),
        *_answer("r1", "a1", ["kept ", "words ", "here"], attempt=2),
        ev.MessageCompleted(run_id="r1", message_id="a1", text="kept words here", seq=3),
        ev.RunCompleted(run_id="r1"),
        ev.MessageSent(message_id="m2", content="again", run_id="r2"),
        ev.RunRequested(run_id="r2", message_id="m2", reply_id="a2", agent="assistant"),
        ev.RunStarted(run_id="r2", attempt=1, worker="w", token=3),
        *_answer("r2", "a2", ["a ", "b ", "c ", "d"]),
        ev.MessageCompleted(run_id="r2", message_id="a2", text="a b c d", seq=4),
        ev.RunCompleted(run_id="r2"),
    )
    empty = ThreadView.empty("t1", "s")
    whole = fold(empty, stored).model_dump(mode="json")
    gone = set(plan(stored, cutoff_ms=10_000).drop)
    assert len(gone) == 2 + 3
    kept = [s for s in stored if s.id not in gone]
    cases = []
    for cut in range(len(stored) + 1):
        seen = stream_ms(stored[cut - 1].id) if cut else -1
        rest = [s for s in kept if stream_ms(s.id) > seen]
        cases.append(
            {"start": fold(empty, stored[:cut]).model_dump(mode="json"), "events": frames(rest)}
        )
    for got in js_fold(cases):
        assert comparable(got) == comparable(whole)


# ---------------------------------------------------------------- the real system


@pytest.fixture
def chatty(settings: Settings) -> Settings:
    """Answers of many deltas: a word every 2 ms, flushed every millisecond."""
    return dataclasses.replace(settings, scripted_delay_ms=2, scripted_words=40, flush_ms=1)


@pytest.fixture
async def system(real_backend: Backend, chatty: Settings) -> AsyncIterator[System]:
    async with running_system(real_backend, chatty) as running:
        yield running


async def _answered(system: System, thread_id: str, content: str) -> str:
    run_id: str = (await system.send(thread_id, content))["run_id"]
    await system.wait_for_run(thread_id, run_id)
    return run_id


async def _stored(system: System, thread_id: str) -> list[Stored]:
    return await system.runtime.store.read(thread_id)


def _deltas(stored: list[Stored], run_id: str) -> list[str]:
    return [
        s.id for s in stored if isinstance(s.event, ev.MessageDelta) and s.event.run_id == run_id
    ]


def _completion(stored: list[Stored], run_id: str) -> Stored:
    return next(
        s for s in stored if isinstance(s.event, ev.MessageCompleted) and s.event.run_id == run_id
    )


async def _history(system: System, thread_id: str) -> dict[str, Any]:
    """The history as the API answers it, once the projector has folded it all."""
    last = (await _stored(system, thread_id))[-1].id

    async def folded() -> bool:
        view = await system.runtime.views.read(thread_id)
        return view.view.last_event_id == last

    await until(folded, within=20)
    return await system.view(thread_id)


async def test_old_answers_lose_their_deltas_and_everything_reads_the_same(
    system: System,
) -> None:
    thread_id = await system.new_thread()
    first = await _answered(system, thread_id, "tell me about tides")
    second = await _answered(system, thread_id, "and about the moon")
    before = await _stored(system, thread_id)
    history = await _history(system, thread_id)
    old, recent = _deltas(before, first), _deltas(before, second)
    assert len(old) > 3 and len(recent) > 3
    # As of just after the second answer completed, with answers older than that
    # second due: the first one is, the second is not.
    done_first = stream_ms(_completion(before, first).id)
    done_second = stream_ms(_completion(before, second).id)
    assert done_second > done_first
    redis = system.runtime.backend.client
    key = system.runtime.store.stream_key(thread_id)
    info, size = await redis.xinfo_stream(key), await redis.memory_usage(key, samples=0)
    compactor = Compactor(system.runtime.backend, system.runtime.store, after_s=1)
    removed = await compactor.compact(thread_id, now_ms=done_second + 999)
    assert removed == len(old) - 1
    # Written again, smaller, with the same counters: new entries go on after the old.
    again = await redis.xinfo_stream(key)
    assert await redis.memory_usage(key, samples=0) < size
    for name in ("last-generated-id", "entries-added"):
        assert again[name] == info[name]

    after = await _stored(system, thread_id)
    assert {s.id for s in before} - {s.id for s in after} == set(old[1:])
    assert _deltas(after, second) == recent
    scratch = fold(ThreadView.empty(thread_id, system.runtime.store.stream_key(thread_id)), after)
    stored_view = (await system.runtime.views.read(thread_id)).view
    assert scratch.model_dump() == stored_view.model_dump()
    assert (await system.runtime.views.current(thread_id)).model_dump() == scratch.model_dump()
    assert await system.view(thread_id) == history
    # Again: nothing more to remove, and the second answer goes once it is old.
    assert await compactor.compact(thread_id, now_ms=done_second + 999) == 0
    assert await compactor.compact(thread_id, now_ms=done_second + 1000) == len(recent) - 1
    assert await system.view(thread_id) == history

    # A thread compacted goes on: a new answer, and the search still finds the old ones.
    await _answered(system, thread_id, "one more")
    found = (await system.http.get("/api/threads", params={"q": "tides"})).json()
    assert [t["id"] for t in found] == [thread_id]
    final = await _history(system, thread_id)
    assert final["messages"][:4] == history["messages"]


async def test_a_socket_resuming_inside_the_compacted_answer_ends_with_the_same_view(
    system: System,
) -> None:
    thread_id = await system.new_thread()
    run_id = await _answered(system, thread_id, "resume me later")
    before = await _stored(system, thread_id)
    deltas = _deltas(before, run_id)
    position = deltas[len(deltas) // 2]  # a client that saw half the answer, then left
    empty = ThreadView.empty(thread_id, system.runtime.store.stream_key(thread_id))
    seen = fold(empty, before[: [s.id for s in before].index(position) + 1])
    compactor = Compactor(system.runtime.backend, system.runtime.store, after_s=1)
    now = stream_ms(before[-1].id) + 1000
    assert await compactor.compact(thread_id, now_ms=now) == len(deltas) - 1

    async with connect(system.ws_url(thread_id, after=position)) as socket:
        frames = await frames_until(socket, "run.completed", run_id)
    events = [f for f in frames if f["type"] == "event"]
    assert events[0]["event"]["type"] == "message.completed"  # the rest of the answer: gone
    caught_up = fold(
        seen,
        [Stored(f["id"], ev.EVENT_ADAPTER.validate_python(f["event"])) for f in events],
    )
    assert caught_up.model_dump() == fold(empty, before).model_dump()


async def test_the_ai_sdk_and_ag_ui_replays_of_a_compacted_answer_hold_all_its_text(
    system: System,
) -> None:
    thread_id = await system.new_thread()
    run_id = await _answered(system, thread_id, "replay me")
    before = await _stored(system, thread_id)
    text = _completion(before, run_id).event.text  # type: ignore[union-attr]
    compactor = Compactor(system.runtime.backend, system.runtime.store, after_s=1)
    await compactor.compact(thread_id, now_ms=stream_ms(before[-1].id) + 1000)
    after = [codec.event_json(s.event) for s in await _stored(system, thread_id)]
    assert [e["type"] for e in after].count("message.delta") == 1

    view = await system.view(thread_id)
    reply_id, agent = view["runs"][run_id]["reply_id"], view["runs"][run_id]["agent"]
    answer = Answer(thread_id=thread_id, message_id=reply_id, runs={run_id: agent})
    chunks = [chunk for event in after for chunk in answer.apply(event)]
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == text
    assert [c["type"] for c in chunks].count("text-end") == 1

    agui = Translation(thread_id=thread_id, run_id="ag-1", runs={run_id})
    out = [item for event in after for item in agui.feed(event)]
    assert "".join(e["delta"] for e in out if e["type"] == "TEXT_MESSAGE_CONTENT") == text
    assert [e["type"] for e in out].count("TEXT_MESSAGE_END") == 1


async def test_the_projector_compacts_by_itself_when_it_is_on(
    real_backend: Backend, chatty: Settings
) -> None:
    on = dataclasses.replace(chatty, compact_after_s=1)
    async with running_system(real_backend, on) as system:
        thread_id = await system.new_thread()
        run_id = await _answered(system, thread_id, "compact me")
        history = await _history(system, thread_id)
        assert len(_deltas(await _stored(system, thread_id), run_id)) > 3

        async def compacted() -> bool:
            return len(_deltas(await _stored(system, thread_id), run_id)) == 1

        await until(compacted, within=20)
        part = system.runtime.store.keys.partition(thread_id)

        async def unscheduled() -> bool:
            return await real_backend.client.zscore(part.compact, thread_id) is None

        await until(unscheduled, within=20)
        assert await system.view(thread_id) == history


async def test_off_by_default_nothing_is_removed_or_scheduled(system: System) -> None:
    assert system.runtime.settings.compact_after_s == 0
    runtime = system.runtime
    projector = Projector(runtime.backend, runtime.store, "p-off")
    assert not [loop for loop in projector.loops() if loop.name == "projector.compact"]
    thread_id = await system.new_thread()
    run_id = await _answered(system, thread_id, "keep everything")
    await _history(system, thread_id)
    deltas = _deltas(await _stored(system, thread_id), run_id)
    assert len(deltas) > 3
    part = runtime.store.keys.partition(thread_id)
    assert not await runtime.backend.client.exists(part.compact)
    assert await projector.compactor.compact(thread_id) == 0  # the off switch holds here too
    assert _deltas(await _stored(system, thread_id), run_id) == deltas


async def test_a_delete_removes_the_threads_compaction_schedule(system: System) -> None:
    thread_id = await system.new_thread()
    await _answered(system, thread_id, "schedule me")
    await _history(system, thread_id)
    redis = system.runtime.backend.client
    part = system.runtime.store.keys.partition(thread_id)
    compactor = Compactor(system.runtime.backend, system.runtime.store, after_s=3600)
    await compactor.run_pass()  # schedules it an hour on; nothing is due yet
    assert await redis.zscore(part.compact, thread_id) is not None

    assert (await system.http.delete(f"/api/threads/{thread_id}")).status_code == 204
    assert await redis.zscore(part.compact, thread_id) is None
    assert lasting(await traces(redis, thread_id), part) == []


async def test_compaction_on_redis_cluster(cluster_url: str, chatty: Settings) -> None:
    backend = Backend.connect(cluster_url)
    try:
        async with running_system(backend, chatty) as system:
            thread_id = await system.new_thread()
            run_id = await _answered(system, thread_id, "on the cluster")
            history = await _history(system, thread_id)
            before = await _stored(system, thread_id)
            compactor = Compactor(backend, system.runtime.store, after_s=1)
            now = stream_ms(before[-1].id) + 1000
            await compactor.run_pass()  # schedules the thread, due a second after its answer
            assert (
                await compactor.compact(thread_id, now_ms=now) == len(_deltas(before, run_id)) - 1
            )
            assert await system.view(thread_id) == history
            scratch = fold(
                ThreadView.empty(thread_id, system.runtime.store.stream_key(thread_id)),
                await _stored(system, thread_id),
            )
            assert (
                scratch.model_dump()
                == (await system.runtime.views.read(thread_id)).view.model_dump()
            )
    finally:
        await backend.close()


async def _xadds(redis: Any) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_xadd", {}).get("calls", 0))


async def test_a_long_thread_loses_its_deltas_without_being_written_again(
    real_backend: Backend, settings: Settings
) -> None:
    """compact.lua writes a stream again in one go, and Redis serves nothing else
    meanwhile: a thread that keeps more than a few thousand entries only has its deltas
    XDELed, which frees the nodes they filled; a shorter one is written again."""
    store = EventStore(real_backend, Keyspace(settings.partitions))
    redis = real_backend.client
    compactor = Compactor(real_backend, store, after_s=1)
    for answers in (REWRITE_MAX_ENTRIES // 6 + 1, 2):
        thread_id = new_id("t")
        key = store.stream_key(thread_id)
        events: list[ev.Event] = [ev.ThreadCreated(title="long")]
        for n in range(answers):
            run, reply = f"r{n}", f"a{n}"
            events += [
                ev.MessageSent(message_id=f"m{n}", content="go on", run_id=run),
                ev.RunRequested(run_id=run, message_id=f"m{n}", reply_id=reply, agent="assistant"),
                ev.RunStarted(run_id=run, attempt=1, worker="w", token=1),
                *_answer(run, reply, ["word "] * 20),
                ev.MessageCompleted(run_id=run, message_id=reply, text="word " * 20, seq=20),
                ev.RunCompleted(run_id=run),
            ]
        async with redis.pipeline(transaction=False) as pipe:
            for n, event in enumerate(events):
                pipe.xadd(key, codec.encode(event), id=f"{1000 + n}-0")  # type: ignore[arg-type]
            await pipe.execute()
        before = await store.read(thread_id)
        whole = fold(ThreadView.empty(thread_id, key), before)
        info, size = await redis.xinfo_stream(key), await redis.memory_usage(key, samples=0)
        xadds = await _xadds(redis)

        removed = await compactor.compact(thread_id, now_ms=10_000_000)

        assert removed == answers * 19
        after = await store.read(thread_id)
        assert fold(ThreadView.empty(thread_id, key), after).model_dump() == whole.model_dump()
        again = await redis.xinfo_stream(key)
        for name in ("last-generated-id", "entries-added"):
            assert again[name] == info[name]
        written = await _xadds(redis) - xadds
        if len(after) > REWRITE_MAX_ENTRIES:
            assert written == 0
            assert await redis.memory_usage(key, samples=0) <= size
        else:
            assert written == len(after)
            assert await redis.memory_usage(key, samples=0) < size


async def test_a_restarted_projector_goes_on_scheduling_from_where_it_stopped(
    real_backend: Backend, settings: Settings
) -> None:
    """The pass's place in the thread indexes outlives the process: a restarted projector
    does not schedule every thread ever active again (each read whole for a look, hours
    of work ahead of the answers really due on a big deployment, after every deploy)."""
    store = EventStore(real_backend, Keyspace(settings.partitions))
    redis = real_backend.client
    seconds, _ = await redis.time()
    long_ago = (int(seconds) - 600) * 1000  # before the index's slack
    threads = [new_id("t") for _ in range(20)]
    for thread_id in threads:
        await redis.zadd(store.keys.partition(thread_id).threads, {thread_id: long_ago})
    await Compactor(real_backend, store, after_s=3600).run_pass()
    for thread_id in threads:
        part = store.keys.partition(thread_id)
        assert await redis.zscore(part.compact, thread_id) == long_ago + 3_600_000
        await redis.zrem(part.compact, thread_id)  # looked at: nothing left to compact

    await Compactor(real_backend, store, after_s=3600).run_pass()  # the projector restarted

    for thread_id in threads:
        assert await redis.zscore(store.keys.partition(thread_id).compact, thread_id) is None
    active = threads[0]
    part = store.keys.partition(active)
    await redis.zadd(part.threads, {active: long_ago + 1000})  # active again: looked at again
    await Compactor(real_backend, store, after_s=3600).run_pass()
    assert await redis.zscore(part.compact, active) == long_ago + 1000 + 3_600_000


async def test_a_thread_is_decoded_planned_and_folded_off_the_event_loop(
    real_backend: Backend, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long thread's decoding and two folds take a CPU for over half a second (20,000
    entries): the projector's event loop, folding what is appended meanwhile, must not
    wait them out, so they run in a thread of their own."""
    store = EventStore(real_backend, Keyspace(settings.partitions))
    thread_id = new_id("t")
    key = store.stream_key(thread_id)
    events = [
        *_thread(),
        *_answer("r1", "a1", ["one ", "two ", "three"]),
        ev.MessageCompleted(run_id="r1", message_id="a1", text="one two three", seq=3),
        ev.RunCompleted(run_id="r1"),
    ]
    for n, event in enumerate(events):
        await real_backend.client.xadd(key, codec.encode(event), id=f"{1000 + n}-0")  # type: ignore[arg-type]
    ran_in: list[threading.Thread] = []

    def watched(thread: str, stream: str, stored: list[Stored], drop: list[str]) -> bool:
        ran_in.append(threading.current_thread())
        return folds_the_same(thread, stream, stored, drop)

    monkeypatch.setattr(compaction, "folds_the_same", watched)
    compactor = Compactor(real_backend, store, after_s=1)
    assert await compactor.compact(thread_id, now_ms=10_000_000) == 2
    assert ran_in and threading.main_thread() not in ran_in


def test_a_completion_without_seq_reads_as_before() -> None:
    """Old completions (no `seq`) keep their encoding, and fold as they did."""
    old = {"type": "message.completed", "run_id": "r1", "message_id": "a1", "text": "x"}
    event = ev.EVENT_ADAPTER.validate_python(old)
    assert isinstance(event, ev.MessageCompleted) and event.seq is None
    assert "seq" not in orjson.loads(codec.encode(event)["body"])


async def test_a_redis_fault_mid_pass_is_retried_and_leaves_every_thread_whole(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes paused past the command timeout: the pass's first write fails (and is run
    once Redis takes writes again); the loop retries, and both threads end compacted."""
    threads = [await system.new_thread() for _ in range(2)]
    runs = [await _answered(system, thread_id, "weather the fault") for thread_id in threads]
    histories = [await _history(system, thread_id) for thread_id in threads]
    redis = system.runtime.backend.client
    last_ms = max([stream_ms((await _stored(system, t))[-1].id) for t in threads])

    async def due() -> bool:
        seconds, micros = await redis.time()
        return int(seconds) * 1000 + int(micros) // 1000 > last_ms + 1000

    await until(due, within=10)
    compactor = Compactor(system.runtime.backend, system.runtime.store, after_s=1, every_s=0.05)
    (loop,) = compactor.loops()
    await redis.execute_command("CLIENT", "PAUSE", 2500, "WRITE")
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="slipstream.compaction"):
        task = asyncio.create_task(loop.run(stop))
        try:

            async def compacted() -> bool:
                for thread_id, run_id in zip(threads, runs, strict=True):
                    if len(_deltas(await _stored(system, thread_id), run_id)) != 1:
                        return False
                return True

            await until(compacted, within=20)
        finally:
            stop.set()
            await task
    assert any("Redis fault" in r.getMessage() for r in caplog.records)
    for thread_id, history in zip(threads, histories, strict=True):
        assert await system.view(thread_id) == history
        scratch = fold(
            ThreadView.empty(thread_id, system.runtime.store.stream_key(thread_id)),
            await _stored(system, thread_id),
        )
        assert (
            scratch.model_dump() == (await system.runtime.views.read(thread_id)).view.model_dump()
        )


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("", 0),
        ("0", 0),
        ("86400", 86_400),
        ("90s", 90),
        ("30m", 1_800),
        ("12h", 43_200),
        ("7D", 604_800),
    ],
)
def test_compact_after_takes_seconds_or_a_unit(given: str, seconds: int) -> None:
    settings = Settings.from_env({"SLIPSTREAM_COMPACT_AFTER": given})
    assert settings.compact_after_s == seconds


@pytest.mark.parametrize("given", ["1w", "-5", "1.5h", "h", "soon"])
def test_a_compact_after_that_is_no_duration_says_what_is_wanted(given: str) -> None:
    with pytest.raises(ConfigError, match=r"SLIPSTREAM_COMPACT_AFTER=.* is not a duration"):
        Settings.from_env({"SLIPSTREAM_COMPACT_AFTER": given})
