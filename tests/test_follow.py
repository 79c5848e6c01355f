"""Following a thread (service/follow.py): the backlog, then live, with no gap and no
duplicate, also when the follower falls behind the live tail."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from service.follow import Followed, follow
from service.live import Subscription
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, running_system


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, settings) as running:
        yield running


async def events_until_run_ends(
    system: System, thread_id: str, after: str | None
) -> list[Followed]:
    seen: list[Followed] = []
    async with asyncio.timeout(20):
        async with contextlib.aclosing(
            follow(system.runtime, thread_id, after, idle_s=0.2)
        ) as followed:
            async for item in followed:
                if item is None:
                    continue
                seen.append(item)
                if item.event["type"] in ("run.completed", "run.failed", "run.cancelled"):
                    return seen
    raise AssertionError("unreachable")


async def test_a_follower_gets_every_event_once_in_order(system: System) -> None:
    thread_id = await system.new_thread()
    sent = await system.send(thread_id, "follow me")
    seen = await events_until_run_ends(system, thread_id, None)
    stored = await system.runtime.store.read(thread_id)
    assert [item.id for item in seen] == [s.id for s in stored][: len(seen)]
    assert seen[0].event["type"] == "thread.created"
    assert any(item.event.get("run_id") == sent["run_id"] for item in seen)
    assert seen[-1].event["type"] == "run.completed"


async def test_a_follower_resumes_after_a_position(system: System) -> None:
    thread_id = await system.new_thread()
    await system.send(thread_id, "first")
    first = await events_until_run_ends(system, thread_id, None)
    await system.send(thread_id, "second")
    rest = await events_until_run_ends(system, thread_id, first[-1].id)
    ids = [item.id for item in [*first, *rest]]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert len(ids) == len(set(ids))
    assert rest[0].event["type"] == "message.sent"


async def test_a_follower_that_falls_behind_reads_the_stream_again(system: System) -> None:
    """The live tail drops a follower that does not keep up; it reads what it missed."""
    thread_id = await system.new_thread()
    hub = system.runtime.hub
    made: list[Subscription] = []
    subscribe = hub.subscribe

    async def recorded(thread: str) -> Subscription:
        made.append(await subscribe(thread))
        return made[-1]

    hub.subscribe = recorded  # type: ignore[method-assign,assignment]
    async with contextlib.aclosing(follow(system.runtime, thread_id, None, idle_s=0.2)) as followed:
        created = await anext(followed)
        assert created is not None and created.event["type"] == "thread.created"
        made[0].drop("too slow")  # as the tail does to a subscription that fell behind
        sent = await system.send(thread_id, "after the drop")
        seen: list[Followed] = []
        async with asyncio.timeout(20):
            async for item in followed:
                if item is not None:
                    seen.append(item)
                    if item.event["type"] == "run.completed":
                        break
    stored = [s.id for s in await system.runtime.store.read(thread_id)]
    assert [created.id, *(item.id for item in seen)] == stored[: len(seen) + 1]
    assert len(made) == 2  # it subscribed again, after reading the stream
    assert seen[0].event["type"] == "message.sent" and seen[0].event["run_id"] == sent["run_id"]
