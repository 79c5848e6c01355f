"""Cancel, regenerate, retry and signal with a client id: a resend answers what the first
call answered, with the same status and body, and writes nothing (over HTTP)."""

from __future__ import annotations

import asyncio

import httpx

from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ProviderError
from tests.fake_llm import FlakyLLM, GatedLLM
from tests.harness import System, running_system
from tests.waits import until


async def length(system: System, thread_id: str) -> int:
    return await system.runtime.store.version(thread_id)


async def post(system: System, run_id: str, command: str, body: dict) -> httpx.Response:  # type: ignore[type-arg]
    return await system.http.post(f"/api/runs/{run_id}/{command}", json=body)


async def status_of(system: System, thread_id: str, run_id: str) -> str:
    status: str = (await system.view(thread_id))["runs"][run_id]["status"]
    return status


def same(first: httpx.Response, again: httpx.Response) -> bool:
    return (first.status_code, first.json()) == (again.status_code, again.json())


async def test_a_resent_cancel_answers_as_the_first_after_the_run_stopped(
    backend: Backend, settings: Settings
) -> None:
    llm = GatedLLM()
    async with running_system(backend, settings, llm=llm) as system:
        thread_id = await system.new_thread()
        running = await system.send(thread_id, "long one")
        queued = await system.send(thread_id, "queued")
        await asyncio.wait_for(llm.started.wait(), 10)

        on_the_spot = await post(system, queued["run_id"], "cancel", {"client_id": "stop-2"})
        assert on_the_spot.json() == {
            "run_id": queued["run_id"],
            "status": "cancelled",
            "was": "queued",
        }
        first = await post(system, running["run_id"], "cancel", {"client_id": "stop-1"})
        assert first.status_code == 202 and first.json()["status"] == "cancel_requested"
        await system.wait_for_run(thread_id, running["run_id"])
        version = await length(system, thread_id)

        again = await post(system, running["run_id"], "cancel", {"client_id": "stop-1"})
        also = await post(system, queued["run_id"], "cancel", {"client_id": "stop-2"})
        assert same(first, again) and same(on_the_spot, also)
        assert await length(system, thread_id) == version
        # Without the client id it is a new cancel, of a run that has ended.
        fresh = await post(system, running["run_id"], "cancel", {})
        assert fresh.status_code == 409


async def test_a_resent_regenerate_starts_no_second_run(
    backend: Backend, settings: Settings
) -> None:
    async with running_system(backend, settings) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "say it twice")
        await system.wait_for_run(thread_id, sent["run_id"])
        # Two copies at once (a retry racing a slow answer), then one after the new run ended.
        first, twin = await asyncio.gather(
            post(system, sent["run_id"], "regenerate", {"client_id": "regen-1"}),
            post(system, sent["run_id"], "regenerate", {"client_id": "regen-1"}),
        )
        assert first.status_code == 202 and same(first, twin)
        await system.wait_for_run(thread_id, first.json()["run_id"])
        version = await length(system, thread_id)
        again = await post(system, sent["run_id"], "regenerate", {"client_id": "regen-1"})
        assert same(first, again)
        assert await length(system, thread_id) == version
        view = await system.view(thread_id)
    assert set(view["runs"]) == {sent["run_id"], first.json()["run_id"]}


async def test_a_resent_retry_answers_202_as_the_first(
    backend: Backend, settings: Settings
) -> None:
    llm = FlakyLLM([ProviderError("401 invalid x-api-key", retryable=False)])
    async with running_system(backend, settings, llm=llm) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "fails once")
        await system.wait_for_run(thread_id, sent["run_id"])
        first = await post(system, sent["run_id"], "retry", {"client_id": "again-1"})
        assert first.json() == {"run_id": sent["run_id"], "status": "queued", "was": "failed"}

        async def completed() -> bool:
            return await status_of(system, thread_id, sent["run_id"]) == "completed"

        await until(completed)
        version = await length(system, thread_id)
        again = await post(system, sent["run_id"], "retry", {"client_id": "again-1"})
        assert same(first, again)
        assert await length(system, thread_id) == version
        assert (await post(system, sent["run_id"], "retry", {})).status_code == 409
    assert llm.calls == 2


async def test_a_resent_signal_answers_as_the_first_and_is_kept_once(
    backend: Backend, settings: Settings
) -> None:
    async with running_system(backend, settings) as system:
        thread_id = await system.new_thread()
        sent = await system.send(thread_id, "Announce it", agent="approval")
        run_id = sent["run_id"]

        async def waiting() -> bool:
            return await status_of(system, thread_id, run_id) == "waiting"

        await until(waiting, within=20)
        body = {"name": "approval", "payload": {"approved": True}, "client_id": "yes-1"}
        first = await post(system, run_id, "signal", body)
        assert first.json() == {"run_id": run_id, "name": "approval", "was": "waiting"}

        async def completed() -> bool:
            return await status_of(system, thread_id, run_id) == "completed"

        await until(completed, within=20)
        version = await length(system, thread_id)
        again = await post(system, run_id, "signal", body)
        older_name = await post(
            system, run_id, "signal", {**body, "client_id": None, "signal_id": "yes-1"}
        )
        assert same(first, again) and same(first, older_name)
        assert await length(system, thread_id) == version
        assert (await post(system, run_id, "signal", {"name": "approval"})).status_code == 409
        events = (await system.http.get(f"/api/threads/{thread_id}/events")).json()
    signals = [e for e in events if e["event"]["type"] == "signal.received"]
    assert len(signals) == 1


async def test_command_bodies_are_checked(backend: Backend, settings: Settings) -> None:
    async with running_system(backend, settings, workers=False) as system:
        thread_id = await system.new_thread()
        run_id = (await system.send(thread_id, "hi"))["run_id"]
        version = await length(system, thread_id)
        bad = await post(system, run_id, "cancel", {"client_id": "has spaces"})
        assert bad.status_code == 422 and "client_id" in bad.json()["detail"]
        unknown = await post(system, run_id, "retry", {"client": "x"})
        assert unknown.status_code == 422
        both = await post(
            system, run_id, "signal", {"name": "approval", "client_id": "a", "signal_id": "b"}
        )
        assert both.status_code == 422 and "differ" in both.json()["detail"]
        assert await length(system, thread_id) == version
        # A run id made before ids grew to 64 bits (12 hex digits) is still one.
        old = await post(system, f"{thread_id}.4dd5f504f314", "cancel", {})
        assert old.status_code == 404
        no_body = await system.http.post(f"/api/runs/{run_id}/cancel")
        assert no_body.status_code == 202
