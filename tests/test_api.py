"""The HTTP API of DESIGN.md's outside contract, end to end over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

import pytest

from consumers.llm.scripted import scripted_reply
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, running_system
from tests.waits import next_millisecond, until


@pytest.fixture
async def system(backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(backend, settings) as running:
        yield running


async def test_a_message_is_answered(system: System, settings: Settings) -> None:
    thread_id = await system.new_thread()
    accepted = await system.send(thread_id, "How do streams work?")
    assert set(accepted) >= {"message_id", "run_id"}

    view = await system.wait_for_run(thread_id, accepted["run_id"])
    user, reply = view["messages"]
    assert (user["id"], user["role"], user["content"]) == (
        accepted["message_id"],
        "user",
        "How do streams work?",
    )
    assert reply["role"] == "assistant" and reply["agent"] == "assistant"
    assert reply["status"] == "completed" and reply["run_id"] == accepted["run_id"]
    assert reply["content"] == scripted_reply("How do streams work?", settings.scripted_words)
    assert view["stream_key"] == system.runtime.store.stream_key(thread_id)
    assert view["last_event_id"]


async def test_threads_are_listed_by_last_activity(system: System) -> None:
    first = await system.new_thread()
    await next_millisecond(system.runtime.store, first)
    second = await system.new_thread()
    listed = [t["id"] for t in (await system.http.get("/api/threads")).json()]
    assert listed[:2] == [second, first]

    await next_millisecond(system.runtime.store, second)
    accepted = await system.send(first, "bump")
    await system.wait_for_run(first, accepted["run_id"])
    listed = (await system.http.get("/api/threads")).json()
    assert [t["id"] for t in listed[:2]] == [first, second]
    assert listed[0]["title"] == "bump"


async def test_resend_with_client_id_is_idempotent(system: System) -> None:
    thread_id = await system.new_thread()
    first = await system.send(thread_id, "once", client_id="c-123")
    again = await system.send(thread_id, "once", client_id="c-123")
    assert (again["message_id"], again["run_id"]) == (first["message_id"], first["run_id"])
    assert again["duplicate"] and not first["duplicate"]
    events = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
    assert [e["event"]["type"] for e in events].count("message.sent") == 1


async def test_events_after_a_position(system: System) -> None:
    thread_id = await system.new_thread()
    accepted = await system.send(thread_id, "hi")
    await system.wait_for_run(thread_id, accepted["run_id"])
    events = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
    assert events[0]["event"]["type"] == "thread.created"
    assert events[-1]["event"]["type"] == "run.completed"
    later = (
        await system.http.get(f"/api/threads/{thread_id}/events", params={"after": events[2]["id"]})
    ).json()
    assert later == events[3:]


async def test_expected_version_conflict_is_409(system: System) -> None:
    thread_id = await system.new_thread()
    ok = await system.http.post(
        f"/api/threads/{thread_id}/messages", json={"content": "a", "expected_version": 1}
    )
    assert ok.status_code == 202
    stale = await system.http.post(
        f"/api/threads/{thread_id}/messages", json={"content": "b", "expected_version": 1}
    )
    assert stale.status_code == 409 and "expected 1" in stale.json()["detail"]


async def _version(system: System, thread_id: str) -> int:
    return await system.runtime.store.version(thread_id)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"content": ""}, 422, "content: must not be empty"),
        ({"content": "   \n"}, 422, "content: must not be empty"),
        ({"content": "x" * (32 * 1024 + 1)}, 413, "at most 32768"),
        ({"content": "é" * (16 * 1024 + 1)}, 413, "32770 bytes"),
        ({}, 422, "content: Field required"),
        ({"content": 5}, 422, "content: Input should be a valid string"),
        ({"content": "hi", "agent": "nobody"}, 422, "no agent named 'nobody'"),
        ({"content": "hi", "client_id": "has space"}, 422, "client_id"),
        ({"content": "hi", "surprise": 1}, 422, "surprise: Extra inputs are not permitted"),
        ({"content": "hi", "edit_of": "mnope"}, 422, "edit_of: 'mnope' is not a user message"),
        ({"content": "hi", "parent_id": "m/x"}, 422, "parent_id: String should match"),
        ({"content": "hi", "edit_of": "m1", "parent_id": "m2"}, 422, "edit_of or parent_id"),
    ],
)
async def test_bad_messages_are_refused_and_write_nothing(
    system: System, body: dict[str, object], status: int, says: str
) -> None:
    thread_id = await system.new_thread()
    response = await system.http.post(f"/api/threads/{thread_id}/messages", json=body)
    assert response.status_code == status
    assert says in response.json()["detail"]
    assert await _version(system, thread_id) == 1


async def test_malformed_json_is_refused(system: System) -> None:
    thread_id = await system.new_thread()
    response = await system.http.post(
        f"/api/threads/{thread_id}/messages",
        content=b'{"content": "hi"',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422 and "JSON" in response.json()["detail"]
    assert await _version(system, thread_id) == 1


async def test_unknown_and_malformed_ids(system: System) -> None:
    missing = await system.http.post("/api/threads/tnope/messages", json={"content": "hi"})
    assert missing.status_code == 404 and "tnope" in missing.json()["detail"]
    assert not await system.runtime.store.exists("tnope")
    assert (await system.http.get("/api/threads/tnope")).status_code == 404
    assert (await system.http.get("/api/threads/bad$id")).status_code == 422
    thread_id = await system.new_thread()
    bad_after = await system.http.get(f"/api/threads/{thread_id}/events", params={"after": "x"})
    assert bad_after.status_code == 400 and "stream id" in bad_after.json()["detail"]
    # Past 64 bits Redis refuses the id: found by schemathesis as a 500.
    huge = await system.http.get(
        f"/api/threads/{thread_id}/events", params={"after": "98-64549392544085006859"}
    )
    assert huge.status_code == 400 and "stream id" in huge.json()["detail"]
    assert (await system.http.post("/api/runs/nonsense/cancel")).status_code == 422
    assert (await system.http.post(f"/api/runs/{thread_id}.abcdef/cancel")).status_code == 404


async def test_cancel_of_a_finished_run_is_409(system: System) -> None:
    thread_id = await system.new_thread()
    accepted = await system.send(thread_id, "hi")
    await system.wait_for_run(thread_id, accepted["run_id"])
    response = await system.http.post(f"/api/runs/{accepted['run_id']}/cancel")
    assert response.status_code == 409 and "completed" in response.json()["detail"]


async def test_health_docs_schema_and_chat_page(system: System) -> None:
    health = (await system.http.get("/healthz")).json()
    assert health["status"] == "ok" and health["redis"] == "ok"
    assert (await system.http.get("/docs")).status_code == 200
    paths = (await system.http.get("/openapi.json")).json()["paths"]
    assert "/api/threads/{thread_id}/messages" in paths
    schema = (await system.http.get("/api/schema/events")).json()
    assert "message.delta" in schema["discriminator"]["mapping"]
    page = await system.http.get("/")
    assert page.status_code == 200 and 'data-testid="thread-list"' in page.text


async def test_health_names_a_loop_that_stopped_making_progress(system: System) -> None:
    expected = {"worker.read", "worker.timers", "projector.fold", "projector.takeover"}

    async def registered() -> bool:
        # The roles register their loops as they start, after the app answers.
        return expected <= set(system.runtime.liveness.loops)

    await until(registered)
    assert (await system.http.get("/healthz")).json()["down"] == {}
    system.runtime.liveness.register("worker.stuck", stale_after_s=-1)
    system.runtime.liveness.failed("worker.stuck", "TimeoutError: Timeout reading")
    response = await system.http.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["redis"] == "ok"
    assert list(body["down"]) == ["worker.stuck"]
    assert body["down"]["worker.stuck"].endswith(": TimeoutError: Timeout reading")
    system.runtime.liveness.forget("worker.stuck")
    assert (await system.http.get("/healthz")).status_code == 200


async def test_rename_and_archive(system: System) -> None:
    thread_id = await system.new_thread()
    renamed = await system.http.patch(f"/api/threads/{thread_id}", json={"title": "  Plans  "})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Plans"
    archived = await system.http.patch(f"/api/threads/{thread_id}", json={"archived": True})
    assert archived.json()["archived"] is True

    async def listed(archived: bool) -> list[str]:
        threads = (await system.http.get("/api/threads", params={"archived": archived})).json()
        return [t["id"] for t in threads]

    await until(lambda: _contains(listed(True), thread_id))
    assert thread_id not in await listed(False)
    assert (await system.http.patch(f"/api/threads/{thread_id}", json={})).status_code == 422
    blank = await system.http.patch(f"/api/threads/{thread_id}", json={"title": "  "})
    assert blank.status_code == 422 and "must not be blank" in blank.json()["detail"]
    missing = await system.http.patch("/api/threads/tnope", json={"title": "x"})
    assert missing.status_code == 404


async def _contains(items: Awaitable[list[str]], item: str) -> bool:
    return item in await items


async def test_regenerate_answers_the_same_message_again(
    system: System, settings: Settings
) -> None:
    thread_id = await system.new_thread()
    first = await system.send(thread_id, "say it twice")
    early = await system.http.post(f"/api/runs/{first['run_id']}/regenerate")
    assert early.status_code in (202, 409)  # 409 while it still runs
    await system.wait_for_run(thread_id, first["run_id"])
    if early.status_code == 202:
        await system.wait_for_run(thread_id, early.json()["run_id"])
    again = await system.http.post(f"/api/runs/{first['run_id']}/regenerate")
    assert again.status_code == 202
    view = await system.wait_for_run(thread_id, again.json()["run_id"])
    answers = [m for m in view["messages"] if m["role"] == "assistant"]
    assert answers[-1]["id"] == again.json()["message_id"]
    assert answers[-1]["content"] == scripted_reply("say it twice", settings.scripted_words)
    assert view["runs"][again.json()["run_id"]]["message_id"] == first["message_id"]


async def test_an_edited_message_is_a_new_version_with_its_own_answer(
    system: System, settings: Settings
) -> None:
    thread_id = await system.new_thread()
    first = await system.send(thread_id, "first question")
    await system.wait_for_run(thread_id, first["run_id"])
    second = await system.send(thread_id, "second question")
    await system.wait_for_run(thread_id, second["run_id"])

    edited = await system.send(thread_id, "second question, better", edit_of=second["message_id"])
    view = await system.wait_for_run(thread_id, edited["run_id"])
    users = {m["id"]: m for m in view["messages"] if m["role"] == "user"}
    assert users[edited["message_id"]]["edit_of"] == second["message_id"]
    # Both versions follow the first question: the earlier one stays, as another branch.
    assert users[edited["message_id"]]["parent_id"] == first["message_id"]
    assert users[second["message_id"]]["parent_id"] == first["message_id"]
    reply = view["messages"][-1]
    expected = scripted_reply("second question, better", settings.scripted_words)
    assert (reply["role"], reply["run_id"]) == ("assistant", edited["run_id"])
    assert reply["content"] == expected

    # An answer is not a message one can edit: refused, nothing written.
    version = await _version(system, thread_id)
    response = await system.http.post(
        f"/api/threads/{thread_id}/messages",
        json={"content": "x", "edit_of": reply["id"]},
    )
    assert response.status_code == 422 and "not a user message" in response.json()["detail"]
    assert await _version(system, thread_id) == version
