"""The inspector CLI (`python -m service inspect ...`, `replay`): real processes on a real Redis.

One thread holds a run that died (its model refused at once) and a run with a
tool call; each command is run as a process and its --json parsed, the dead
run is requeued and completes, and a tampered stored view is found by replay.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from consumers.llm.scripted import ScriptedLLM
from service import commands, inspection
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ProviderError
from slipstream.store import EventStore
from tests.fake_llm import FlakyLLM
from tests.harness import System, running_system
from tests.ports import free_port
from tests.processes import ROOT, env_for
from tests.waits import until

TOOL_QUESTION = 'what is six times seven? [[tool calculator {"expression": "6*7"}]]'


async def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m service ARGS` as its own process (in a thread: the system keeps running)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        env=env_for(REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def cli_json(redis_url: str, *args: str) -> Any:
    done = await cli(redis_url, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def dead_and_tool_runs(system: System) -> tuple[str, str, str]:
    """A thread with a run that failed for good, then one that called a tool."""
    thread_id = await system.new_thread()
    dead = (await system.send(thread_id, "this one dies"))["run_id"]
    view = await system.wait_for_run(thread_id, dead)
    assert view["runs"][dead]["status"] == "failed"
    tool = (await system.send(thread_id, TOOL_QUESTION, agent="researcher"))["run_id"]
    view = await system.wait_for_run(thread_id, tool)
    assert view["runs"][tool]["status"] == "completed", view["runs"][tool]
    return thread_id, dead, tool


async def test_every_inspect_command_and_a_requeued_dead_run(
    real_backend: Backend, settings: Settings, redis_url: str
) -> None:
    refusal = ProviderError("bad request (HTTP 400)", retryable=False)
    async with running_system(
        real_backend, settings, llm=FlakyLLM([refusal], words=60, delay_ms=4)
    ) as system:
        thread_id, dead, tool = await dead_and_tool_runs(system)

        thread = await cli_json(redis_url, "inspect", "thread", thread_id)
        types = [item["type"] for item in thread["timeline"]]
        assert types[0] == "thread.created" and "tool.called" in types and "tool.result" in types
        deltas = [item for item in thread["timeline"] if item["type"] == "message.delta"]
        assert deltas and sum(d["count"] for d in deltas) > len(deltas)  # summarised
        answers = [
            item["text"] for item in thread["timeline"] if item["type"] == "message.completed"
        ]
        assert any("42" in text for text in answers)
        assert {r["id"]: r["status"] for r in thread["runs"]} == {dead: "failed", tool: "completed"}
        text = (await cli(redis_url, "inspect", "thread", thread_id)).stdout
        assert "called calculator" in text and "run failed: model error" in text

        letters = await cli_json(redis_url, "inspect", "dead")
        assert [(d["run"], d["status_now"]) for d in letters] == [(dead, "failed")]
        assert "bad request" in letters[0]["reason"]

        run = await cli_json(redis_url, "inspect", "run", dead)
        assert run["state"]["status"] == "failed" and run["work"] == []
        assert [a["outcome"] for a in run["attempts"]] == [f"failed: {letters[0]['reason']}"]
        assert run["dead_letters"][0]["reason"] == letters[0]["reason"]
        called = await cli_json(redis_url, "inspect", "run", tool)
        assert [c["tool"] for c in called["view"]["tools"]] == ["calculator"]

        requeued = await cli_json(redis_url, "inspect", "requeue", dead)
        assert requeued == {"run": dead, "thread": thread_id, "was": "failed", "status": "queued"}
        view = await system.wait_for_run(thread_id, dead)
        assert view["runs"][dead]["status"] == "completed"
        again = await cli(redis_url, "inspect", "requeue", dead)
        assert again.returncode == 1 and "completed, not failed" in again.stderr
        letters = await cli_json(redis_url, "inspect", "dead")
        assert [(d["run"], d["status_now"]) for d in letters] == [(dead, "completed")]
        run = await cli_json(redis_url, "inspect", "run", dead)
        assert [a["outcome"] for a in run["attempts"]][-1] == "completed"

        groups = await cli_json(redis_url, "inspect", "lag")
        names = {(g["stream"], g["group"]) for g in groups}
        assert ("work", "workers") in names and ("feed", "projectors") in names
        assert all(g["pending"] == 0 for g in groups if g["stream"] == "work")
        assert "oldest idle" in (await cli(redis_url, "inspect", "lag")).stdout


async def test_replay_finds_a_tampered_view(
    real_backend: Backend, settings: Settings, redis_url: str
) -> None:
    async with running_system(real_backend, settings, llm=ScriptedLLM(words=30)) as system:
        thread_id = await system.new_thread()
        run_id = (await system.send(thread_id, "hello there"))["run_id"]
        await system.wait_for_run(thread_id, run_id)
        store = system.runtime.store
        view_key = store.keys.partition(thread_id).view(thread_id)

        async def projected() -> bool:
            return await store.redis.hget(view_key, "last") == (await store.read(thread_id))[-1].id

        await until(projected)  # the projector is another task
        same = await cli_json(redis_url, "replay", thread_id)
        assert same["same"] is True and same["differences"] == []

    answer = await real_backend.client.hget(view_key, "m:1")
    await real_backend.client.hset(view_key, "m:1", answer.replace('"completed"', '"streaming"'))
    done = await cli(redis_url, "replay", thread_id, "--json")
    assert done.returncode == 1
    found = json.loads(done.stdout)["differences"]
    assert [(d["where"], d["field"]) for d in found] == [("view", "m:1")]
    assert found[0]["rebuilt"] == answer
    text = (await cli(redis_url, "replay", thread_id)).stdout
    assert 'status: stored "streaming", rebuilt "completed"' in text


async def test_an_unknown_thread_and_an_unreachable_redis_say_so(redis_url: str) -> None:
    unknown = await cli(redis_url, "inspect", "thread", "tnosuchthread")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "inspect: no thread 'tnosuchthread' in this deployment"
    assert (await cli(redis_url, "replay", "tnosuchthread")).returncode == 1
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    down = await cli(nowhere, "inspect", "lag")
    assert down.returncode == 1
    assert len(down.stderr.strip().splitlines()) == 1
    assert down.stderr.startswith(f"inspect: cannot reach Redis at {nowhere}")


@pytest.mark.parametrize("limit", ["0", "-3", "2.5", "ten"])
async def test_a_limit_that_is_no_positive_count_is_refused(redis_url: str, limit: str) -> None:
    refused = await cli(redis_url, "inspect", "dead", "--limit", limit)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines()[-1] == (
        f"python -m service inspect dead: error: argument --limit: {limit!r} "
        "is not a positive whole number"
    )
    shown = await cli(redis_url, "inspect", "dead", "--limit", "1")
    assert shown.returncode == 0, shown.stderr


async def test_two_requeues_at_once_start_the_run_once(
    real_backend: Backend, settings: Settings
) -> None:
    refusal = ProviderError("bad request (HTTP 400)", retryable=False)
    async with running_system(real_backend, settings, llm=FlakyLLM([refusal])) as system:
        thread_id = await system.new_thread()
        dead = (await system.send(thread_id, "this one dies"))["run_id"]
        assert (await system.wait_for_run(thread_id, dead))["runs"][dead]["status"] == "failed"
        store = system.runtime.store
    # No worker now: the requeued run stays queued for the count.
    outcomes = await asyncio.gather(
        inspection.requeue(store, dead), inspection.requeue(store, dead), return_exceptions=True
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Requeued", "RunStatusChanged"]
    assert "queued, not failed" in str(next(o for o in outcomes if isinstance(o, Exception)))
    work = await real_backend.client.xrange(store.keys.partition(thread_id).work)
    assert [fields["run"] for _, fields in work] == [dead]
    assert (await store.run_state(dead, thread_id))["status"] == "queued"


async def test_terminal_controls_in_a_thread_are_shown_escaped(
    real_backend: Backend, settings: Settings, redis_url: str
) -> None:
    """What a user wrote is printed to the operator's terminal: an escape sequence in it
    (retitle the window, clear the screen, a carriage return over a line) is shown as
    text, not obeyed; --json escapes it as JSON does."""
    store = EventStore.from_settings(real_backend, settings)
    thread_id, _ = await commands.create_thread(store, "title\x1b]0;owned\x07")
    content = "look\x1b[2J\rhidden\u202eevil\x9b"
    await commands.send_message(store, thread_id, content, "assistant")
    shown = await cli(redis_url, "inspect", "thread", thread_id)
    assert shown.returncode == 0, shown.stderr
    controls = {"\x1b", "\x07", "\r", "\u202e", "\x9b"}
    assert not controls & set(shown.stdout)
    assert "look\\x1b[2J" in shown.stdout and "hidden\\u202eevil\\x9b" in shown.stdout
    as_json = await cli_json(redis_url, "inspect", "thread", thread_id)
    assert content in [item["text"] for item in as_json["timeline"]]
