"""A script batch that redis-py sends again whole writes each of its appends once.

redis-py resends a pipeline whose connection dropped, all of it, even when Redis
had applied it and only the replies were lost. An append is recognised as sent
before by its batch id, and a run's hash keeps only its last one: so two appends
of one run (a workflow's steps run by `ctx.gather`) must never be sent so that
the one's resend comes after the other, in one pipeline or in two at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio.client import Pipeline

from consumers.answer import Attempt
from service import commands
from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import Keyspace
from slipstream.leases import Leases
from slipstream.store import EventStore
from tests.waits import until


@pytest.fixture
def store(real_backend: Backend, settings: Settings) -> EventStore:
    return EventStore(real_backend, Keyspace(settings.partitions), feed_maxlen=settings.feed_maxlen)


async def running(store: EventStore) -> Attempt:
    """A run claimed by a worker: what its appends carry."""
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hi", "assistant")
    claim = await Leases(store.backend, store.keys, lease_ms=60_000).claim(
        sent.run_id, thread_id, "w:1:a", "1-1"
    )
    assert claim.outcome == "OK"
    return Attempt(thread_id, sent.run_id, "m1", "assistant", claim.attempt, claim.token, "1-1")


def delta(attempt: Attempt, message_id: str) -> ev.MessageDelta:
    return ev.MessageDelta(run_id=attempt.run_id, message_id=message_id, seq=1, text="x")


async def written(store: EventStore, attempt: Attempt, event: ev.Event) -> int:
    stored = await store.read(attempt.thread_id)
    return sum(1 for s in stored if getattr(s.event, "event_id", None) == event.event_id)


@pytest.fixture
def resent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every pipeline is applied, its replies lost, and sent again (redis-py's retry);
    yields the number of pipelines sent so far."""
    real = Pipeline._execute_pipeline
    sent = [0]

    async def twice(self: Pipeline, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        sent[0] += 1
        await real(self, connection, commands, raise_on_error)
        return await real(self, connection, commands, raise_on_error)

    monkeypatch.setattr(Pipeline, "_execute_pipeline", twice)
    yield sent


async def test_two_appends_of_one_run_made_at_once_are_each_written_once(
    store: EventStore, resent: list[int]
) -> None:
    attempt = await running(store)
    first, second = delta(attempt, "m1"), delta(attempt, "m2")
    await asyncio.gather(
        store.append(attempt.fenced([first])), store.append(attempt.fenced([second]))
    )
    assert (await written(store, attempt, first), await written(store, attempt, second)) == (1, 1)


async def test_an_append_made_while_another_of_its_run_is_in_flight_waits_for_it(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempt = await running(store)
    first, second = delta(attempt, "m1"), delta(attempt, "m2")
    real = Pipeline._execute_pipeline
    later: list[asyncio.Task[object]] = []

    async def resent_after_another(
        self: Pipeline, connection: Any, commands: Any, raise_on_error: bool
    ) -> Any:
        await real(self, connection, commands, raise_on_error)
        if not later:
            # The first batch was applied and its reply lost; the run's next append is
            # made before the resend: it must not be written in between.
            later.append(asyncio.create_task(store.append(attempt.fenced([second]))))

            async def sent_or_held() -> bool:
                return later[0].done() or store.batch.held > 0

            await until(sent_or_held)
        return await real(self, connection, commands, raise_on_error)

    monkeypatch.setattr(Pipeline, "_execute_pipeline", resent_after_another)
    await store.append(attempt.fenced([first]))
    await later[0]
    assert (await written(store, attempt, first), await written(store, attempt, second)) == (1, 1)
