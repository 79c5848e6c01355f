"""GET /api/threads?q= over real HTTP, with the projector indexing in the background."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from slipstream import events as ev
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.keys import new_id, new_run_id
from slipstream.store import Append, EventStore
from tests.harness import System, running_system
from tests.waits import next_millisecond, until


def exchange(question: str, answer: str, thread_id: str) -> tuple[list[ev.Event], str]:
    """A question and its completed answer, as a worker writes them; and the answer's id."""
    run_id, message_id, reply_id = new_run_id(thread_id), new_id("m"), new_id("m")
    return [
        ev.MessageSent(message_id=message_id, content=question, agent="assistant", run_id=run_id),
        ev.RunRequested(run_id=run_id, message_id=message_id, reply_id=reply_id, agent="assistant"),
        ev.RunStarted(run_id=run_id, attempt=1, worker="w:1:a", token=1),
        ev.MessageCompleted(run_id=run_id, message_id=reply_id, text=answer),
        ev.RunCompleted(run_id=run_id),
    ], reply_id


async def talk(store: EventStore, thread_id: str, question: str, answer: str) -> str:
    events, reply_id = exchange(question, answer, thread_id)
    await store.append(Append(thread_id, events))
    return reply_id


async def search(client: httpx.AsyncClient, q: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/threads", params={"q": q, **params})
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()
    return hits


def ids(hits: list[dict[str, Any]]) -> list[str]:
    return [hit["id"] for hit in hits]


def found(
    client: httpx.AsyncClient, q: str, expected: list[str], **params: Any
) -> Callable[[], Awaitable[bool]]:
    """A condition for `until`: the search answers `expected` (the projector caught up)."""

    async def check() -> bool:
        return ids(await search(client, q, **params)) == expected

    return check


@pytest.fixture
async def system(real_backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(real_backend, settings) as running:
        yield running


async def test_a_word_deep_in_an_old_answer_is_found(system: System) -> None:
    store = system.runtime.store
    old = await system.new_thread()
    answer = "Plenty of ordinary filler words go here. " * 100 + "The quetzal nests in trees."
    reply_id = await talk(store, old, "Tell me about birds", answer)
    await talk(store, old, "And fish?", "Fish swim.")
    newer = [await system.new_thread() for _ in range(5)]
    for thread_id in newer:
        await talk(store, thread_id, "Tell me about birds", "Sparrows and robins.")

    await until(found(system.http, "quetzal", [old]), within=20)
    hit = (await search(system.http, "quetzal"))[0]
    assert hit["message_id"] == reply_id
    assert "quetzal nests in trees" in hit["snippet"] and hit["snippet"].startswith("…")
    assert hit["title"] == "Tell me about birds" and hit["messages"] == 4
    # Case and accents do not matter; every word must be there.
    assert ids(await search(system.http, "QUETZAL Nests")) == [old]
    assert await search(system.http, "quetzal sparrows") == []

    async def all_newer() -> bool:
        return set(ids(await search(system.http, "sparrows robins"))) == set(newer)

    await until(all_newer, within=20)


async def test_the_best_match_comes_first(system: System) -> None:
    store = system.runtime.store
    once = (await system.http.post("/api/threads", json={"title": "Sundials"})).json()["id"]
    await talk(store, once, "What is a gnomon?", "The part of a sundial that casts the shadow.")
    titled = (await system.http.post("/api/threads", json={"title": "Gnomon angles"})).json()["id"]
    await talk(store, titled, "How steep?", "As steep as your latitude.")
    often = await system.new_thread()
    await talk(store, often, "gnomon gnomon gnomon", "A gnomon, the gnomon, every gnomon.")
    unrelated = await system.new_thread()
    await talk(store, unrelated, "Clocks?", "Water clocks drip.")

    # Six mentions in messages (and the title the first one made), then the title alone
    # (a title word counts five), then one mention under a title without it.
    await until(found(system.http, "gnomon", [often, titled, once]), within=20)
    hits = await search(system.http, "gnomon", limit=2)
    assert ids(hits) == [often, titled]
    title_hit = next(h for h in await search(system.http, "angles") if h["id"] == titled)
    assert title_hit["snippet"] == "Gnomon angles" and title_hit["message_id"] is None


async def test_empty_long_and_wordless_queries(system: System) -> None:
    thread_id = await system.new_thread()
    await talk(system.runtime.store, thread_id, "hello there", "hi")
    plain = (await system.http.get("/api/threads")).json()
    for blank in ("", "   "):
        listed = (await system.http.get("/api/threads", params={"q": blank})).json()
        assert ids(listed) == ids(plain)
    assert await search(system.http, "!!! ??") == []  # no words: nothing matches

    too_long = await system.http.get("/api/threads", params={"q": "x" * 201})
    assert too_long.status_code == 422 and "200" in too_long.json()["detail"]
    too_many = await system.http.get("/api/threads", params={"q": "a b c d e f g h i"})
    assert too_many.status_code == 422
    assert too_many.json()["detail"] == "q has 9 words; a search takes at most 8"


async def test_archived_threads_are_found_and_marked(system: System) -> None:
    store = system.runtime.store
    kept, shelved = await system.new_thread(), await system.new_thread()
    for thread_id in (kept, shelved):
        await talk(store, thread_id, "axolotl care", "Cool water.")
        await next_millisecond(store, thread_id)
    archived = await system.http.patch(f"/api/threads/{shelved}", json={"archived": True})
    assert archived.status_code == 200

    await until(found(system.http, "axolotl", [shelved, kept]), within=20)
    marks = {hit["id"]: hit["archived"] for hit in await search(system.http, "axolotl")}
    assert marks == {shelved: True, kept: False}
    assert ids(await search(system.http, "axolotl", archived="true")) == [shelved]
    listed = ids((await system.http.get("/api/threads")).json())  # the list is as it was
    assert kept in listed and shelved not in listed


async def test_other_users_threads_never_appear(real_backend: Backend, settings: Settings) -> None:
    tokens_mode = dataclasses.replace(settings, auth="tokens")
    async with running_system(real_backend, tokens_mode) as system:
        store = system.runtime.store
        base = str(system.http.base_url)
        tokens = {who: await system.runtime.auth.users.add(who) for who in ("ann", "bob", "eve")}

        def client(who: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {tokens[who]}"}
            )

        async with client("ann") as ann, client("bob") as bob, client("eve") as eve:
            made: dict[str, str] = {}
            for who, owner in (("ann", ann), ("bob", bob), ("shared", ann)):
                made[who] = (await owner.post("/api/threads", json={"title": who})).json()["id"]
                await talk(store, made[who], "Where do pangolins live?", "In Africa and Asia.")
                await next_millisecond(store, made[who])  # each thread later than the last
            added = await ann.post(f"/api/threads/{made['shared']}/members", json={"user": "bob"})
            assert added.status_code == 200

            await until(found(ann, "pangolins", [made["shared"], made["ann"]]), within=20)
            await until(found(bob, "pangolins", [made["shared"], made["bob"]]), within=20)
            assert await search(eve, "pangolins") == []
            assert await search(eve, "africa asia") == []
            # Leaving the thread takes it out of the member's searches at once.
            left = await bob.delete(f"/api/threads/{made['shared']}/members/bob")
            assert left.status_code == 204
            assert ids(await search(bob, "pangolins")) == [made["bob"]]
