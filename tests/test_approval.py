"""Approval waits: a tool call that needs a person's yes parks the chat run
(`run.waiting` for "approval" with the call); `POST /api/runs/{id}/signal` with
`approval` resumes it: a yes runs the tool once, a no reaches the model as a tool
error with the reason. Bad payloads and answers to another call write nothing; a
cancel ends a waiting run; the wait outlives its worker.

End to end on a real redis-server (web, worker and projector in this process) with
the scripted model and a `clerk` agent whose `stamp` tool is in its `approve` list
and whose `seal` tool is declared `@tool(needs_approval=True)`.
"""

from __future__ import annotations

import os
import signal as signals
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from consumers import agents
from consumers.agents import Agent
from consumers.handoff import HANDOFF_TOOL, handoff_message_id
from consumers.llm.base import Prompt, ToolUseBlock
from consumers.llm.directives import read_directives
from consumers.llm.parts import Part, StopPart, TextPart, ToolCallPart, UsagePart
from consumers.llm.scripted import ScriptedLLM, scripted_reply
from consumers.tools import tool
from slipstream.backend import Backend
from slipstream.config import Settings
from tests.harness import System, running_system
from tests.test_run_faults import Cluster, wait_for
from tests.waits import until

WORDS = 12
RAN: list[str] = []  # what the tools below were run with, in order


@tool(name="stamp")
def stamp(text: str) -> str:
    """Stamp a text: a tool with a side effect, which the tests count."""
    RAN.append(f"stamp:{text}")
    return text.upper()


@tool(name="seal", needs_approval=True)
async def seal(text: str) -> str:
    """Seal a text; always asks a person first."""
    RAN.append(f"seal:{text}")
    return f"sealed {text}"


CLERK_SYSTEM = "You stamp and seal texts."
DESK_SYSTEM = "You stamp what comes in and hand it to the clerk."


@pytest.fixture(autouse=True)
def clerk() -> Iterator[None]:
    """The shipped agents plus `clerk`, for the processes of this test."""
    shipped = agents.load()
    helper = Agent(
        name="clerk",
        description="Stamps and seals texts.",
        system=CLERK_SYSTEM,
        tools=("stamp", "seal", "calculator"),
        approve=("stamp",),
    )
    desk = Agent(
        name="desk",
        description="Stamps what comes in, then hands it to the clerk.",
        system=DESK_SYSTEM,
        tools=("stamp",),
        approve=("stamp",),
        handoffs=("clerk",),
    )
    previous = agents.use(shipped.model_copy(update={"agents": (*shipped.agents, helper, desk)}))
    RAN.clear()
    yield
    agents.use(previous)


def answered(question: str) -> str:
    return scripted_reply(read_directives(question).text, WORDS)


@pytest.fixture
async def system(real_backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(
        real_backend, settings, llm=ScriptedLLM(words=WORDS, delay_ms=0)
    ) as running:
        yield running


async def events_of(system: System, thread_id: str) -> list[dict[str, Any]]:
    response = await system.http.get(f"/api/threads/{thread_id}/events")
    assert response.status_code == 200, response.text
    return [e["event"] for e in response.json()]


async def waiting_call(system: System, thread_id: str, run_id: str) -> dict[str, Any]:
    """Wait until the run waits for approval; the call it waits on, from the view."""
    seen: dict[str, Any] = {}

    async def parked() -> bool:
        run = (await system.view(thread_id))["runs"][run_id]
        seen.update(run)
        return run["status"] == "waiting" and run["approval"] is not None

    await until(parked)
    approval: dict[str, Any] = seen["approval"]
    return approval


async def waiting_for_another(
    system: System, thread_id: str, run_id: str, not_call: str
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def parked() -> bool:
        run = (await system.view(thread_id))["runs"][run_id]
        seen.update(run)
        approval = run["approval"]
        return bool(run["status"] == "waiting" and approval and approval["call_id"] != not_call)

    await until(parked)
    approval: dict[str, Any] = seen["approval"]
    return approval


async def signal(system: System, run_id: str, payload: Any, name: str = "approval") -> Any:
    return await system.http.post(
        f"/api/runs/{run_id}/signal", json={"name": name, "payload": payload}
    )


async def ask(system: System, question: str) -> tuple[str, str]:
    thread_id = await system.new_thread()
    sent = await system.send(thread_id, question, agent="clerk")
    return thread_id, sent["run_id"]


async def test_an_approved_call_runs_once_and_the_model_goes_on(system: System) -> None:
    question = 'file it [[tool stamp {"text": "ok"}]]'
    thread_id, run_id = await ask(system, question)

    call = await waiting_call(system, thread_id, run_id)
    assert (call["tool"], call["args"]) == ("stamp", {"text": "ok"})
    view = await system.view(thread_id)
    reply = view["messages"][-1]
    assert (reply["role"], reply["status"]) == ("assistant", "waiting")
    assert view["runs"][run_id]["waiting_for"] == "approval"
    assert RAN == []  # nothing runs before the yes

    accepted = await signal(system, run_id, {"call_id": call["call_id"], "approved": True})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"run_id": run_id, "name": "approval", "was": "waiting"}
    view = await system.wait_for_run(thread_id, run_id)

    assert view["runs"][run_id]["status"] == "completed"
    assert view["runs"][run_id]["approval"] is None
    assert view["messages"][-1]["content"] == 'stamp returned "OK". ' + answered(question)
    assert RAN == ["stamp:ok"]
    history = [e for e in await events_of(system, thread_id) if e.get("run_id") == run_id]
    [waiting] = [e for e in history if e["type"] == "run.waiting"]
    assert waiting["waiting_for"] == "approval"
    assert (waiting["call_id"], waiting["tool"], waiting["args"]) == (
        call["call_id"],
        "stamp",
        {"text": "ok"},
    )
    kinds = [e["type"] for e in history]
    assert (kinds.count("tool.called"), kinds.count("tool.result")) == (1, 1)
    # Journaled, then parked; the answer's signal, then the next attempt runs the tool.
    order = [k for k in kinds if k in ("tool.called", "run.waiting", "signal.received")]
    assert order == ["tool.called", "run.waiting", "signal.received"]
    assert kinds.index("signal.received") < kinds.index("tool.result")
    [received] = [e for e in history if e["type"] == "signal.received"]
    assert received["payload"] == {"call_id": call["call_id"], "approved": True}


async def test_time_to_first_token_leaves_out_the_wait_for_a_person(system: System) -> None:
    """slipstream_time_to_first_token_seconds times the system, not a person: an attempt
    going on after an approval times its first text from its own start, not from the
    request (a p99 made of people's answers, minutes to hours, says nothing)."""

    def observed() -> tuple[float, float]:
        labels = {"agent": "clerk"}
        name = "slipstream_time_to_first_token_seconds"
        count = REGISTRY.get_sample_value(f"{name}_count", labels) or 0.0
        return count, REGISTRY.get_sample_value(f"{name}_sum", labels) or 0.0

    count, total = observed()
    thread_id, run_id = await ask(system, 'file it [[tool stamp {"text": "ok"}]]')
    call = await waiting_call(system, thread_id, run_id)
    redis = system.runtime.backend.client

    async def now_ms() -> int:
        seconds, micros = await redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    parked = await now_ms()

    async def a_person_read_it() -> bool:
        return await now_ms() > parked + 1000

    await until(a_person_read_it)
    answered_ms = await now_ms()
    assert (await signal(system, run_id, {"call_id": call["call_id"], "approved": True})).is_success
    await system.wait_for_run(thread_id, run_id)
    done_ms = await now_ms()
    after_count, after_total = observed()
    assert after_count == count + 1  # the first text came after the approval
    assert after_total - total <= (done_ms - answered_ms) / 1000 + 0.05


async def test_a_denied_call_never_runs_and_the_model_reads_why(system: System) -> None:
    question = 'file it [[tool stamp {"text": "ok"}]]'
    thread_id, run_id = await ask(system, question)
    call = await waiting_call(system, thread_id, run_id)

    no = {"call_id": call["call_id"], "approved": False, "reason": "not on a Sunday"}
    assert (await signal(system, run_id, no)).status_code == 202
    view = await system.wait_for_run(thread_id, run_id)

    assert RAN == []
    assert view["runs"][run_id]["status"] == "completed"
    [result] = [e for e in await events_of(system, thread_id) if e["type"] == "tool.result"]
    assert result["call_id"] == call["call_id"] and result["is_error"] is True
    assert "denied" in result["result"] and "not on a Sunday" in result["result"]
    # The scripted model says what each result was: the denial reached it.
    content = view["messages"][-1]["content"]
    assert content.startswith('stamp returned "a person denied the call to stamp: not on a Sunday')
    assert content.endswith(answered(question))


async def test_a_tool_declared_needs_approval_waits_too(system: System) -> None:
    question = 'close it [[tool seal {"text": "box"}]] [[tool calculator {"expression": "2+2"}]]'
    thread_id, run_id = await ask(system, question)
    call = await waiting_call(system, thread_id, run_id)
    assert call["tool"] == "seal"

    assert (await signal(system, run_id, {"call_id": call["call_id"], "approved": True})).is_success
    view = await system.wait_for_run(thread_id, run_id)

    assert RAN == ["seal:box"]
    assert view["messages"][-1]["content"] == (
        'seal returned "sealed box". calculator returned 4. ' + answered(question)
    )


async def test_bad_payloads_are_422_and_write_nothing(system: System) -> None:
    thread_id, run_id = await ask(system, 'file it [[tool stamp {"text": "ok"}]]')
    call_id = (await waiting_call(system, thread_id, run_id))["call_id"]
    before = await events_of(system, thread_id)

    bad: list[tuple[Any, str]] = [
        (None, "payload: Input should be a valid dictionary"),
        ({"approved": True}, "payload.call_id: Field required"),
        ({"call_id": call_id}, "payload.approved: Field required"),
        (
            {"call_id": call_id, "approved": "yes"},
            "payload.approved: Input should be a valid boolean",
        ),
        ({"call_id": 7, "approved": True}, "payload.call_id: Input should be a valid string"),
        ({"call_id": "", "approved": True}, "payload.call_id: String should have at least 1"),
        ({"call_id": call_id, "approved": True, "reason": 3}, "payload.reason: Input should be"),
        ({"call_id": call_id, "approved": True, "why": "x"}, "payload.why: Extra inputs"),
    ]
    for payload, says in bad:
        response = await signal(system, run_id, payload)
        assert response.status_code == 422, (payload, response.text)
        assert says in response.json()["detail"], (payload, response.json())

    # A chat run takes no other signal; an answer to a call it does not wait on is refused.
    other = await signal(system, run_id, {"approved": True}, name="go")
    assert other.status_code == 409 and "takes only the 'approval' signal" in other.text
    stranger = await signal(system, run_id, {"call_id": "call_nope", "approved": True})
    assert stranger.status_code == 409, stranger.text
    assert f"waits for approval of call {call_id!r}, not 'call_nope'" in stranger.json()["detail"]

    assert await events_of(system, thread_id) == before
    assert (await system.view(thread_id))["runs"][run_id]["status"] == "waiting"
    assert RAN == []


async def test_a_cancelled_wait_ends_cancelled_and_takes_no_answer(system: System) -> None:
    thread_id, run_id = await ask(system, 'file it [[tool stamp {"text": "ok"}]]')
    call_id = (await waiting_call(system, thread_id, run_id))["call_id"]

    cancelled = await system.http.post(f"/api/runs/{run_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    view = await system.wait_for_run(thread_id, run_id)

    run = view["runs"][run_id]
    assert (run["status"], run["approval"], run["waiting_for"]) == ("cancelled", None, None)
    assert view["messages"][-1]["status"] == "cancelled"
    late = await signal(system, run_id, {"call_id": call_id, "approved": True})
    assert late.status_code == 409 and "already finished as cancelled" in late.text
    assert RAN == []
    # The thread is free again: a next message is answered.
    sent = await system.send(thread_id, "and now?", agent="clerk")
    assert (await system.wait_for_run(thread_id, sent["run_id"]))["runs"][sent["run_id"]][
        "status"
    ] == "completed"


async def test_an_interrupt_ends_a_run_waiting_for_approval_at_once(system: System) -> None:
    """No worker holds a waiting run to see a cancel flag: the interrupt cancels it
    on the spot, and the newer message to that agent is answered."""
    thread_id, run_id = await ask(system, 'file it [[tool stamp {"text": "ok"}]]')
    call_id = (await waiting_call(system, thread_id, run_id))["call_id"]

    newer = await system.send(thread_id, "never mind", agent="clerk", on_busy="interrupt")
    view = await system.wait_for_run(thread_id, newer["run_id"])

    assert view["runs"][newer["run_id"]]["status"] == "completed"
    run = view["runs"][run_id]
    assert (run["status"], run["approval"], run["waiting_for"]) == ("cancelled", None, None)
    late = await signal(system, run_id, {"call_id": call_id, "approved": True})
    assert late.status_code == 409 and "already finished as cancelled" in late.text
    again = await system.http.post(f"/api/runs/{run_id}/cancel")
    assert again.status_code == 409 and "already finished as cancelled" in again.text
    assert RAN == []


async def test_a_cancel_ends_a_waiting_run_an_older_interrupt_only_flagged(
    system: System,
) -> None:
    """Before interrupts ended waiting runs they set the cancel flag alone, which no
    worker sees while the run waits: a cancel must still end such a run."""
    thread_id, run_id = await ask(system, 'file it [[tool stamp {"text": "ok"}]]')
    await waiting_call(system, thread_id, run_id)
    store = system.runtime.store
    await store.redis.hset(store.keys.partition(thread_id).run(run_id), "cancel", "1")

    response = await system.http.post(f"/api/runs/{run_id}/cancel")

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    view = await system.wait_for_run(thread_id, run_id)
    assert view["runs"][run_id]["status"] == "cancelled"
    assert RAN == []


async def test_several_calls_in_one_turn_wait_one_after_the_other(system: System) -> None:
    question = 'both [[tool stamp {"text": "a"}]] [[tool stamp {"text": "b"}]]'
    thread_id, run_id = await ask(system, question)
    first = await waiting_call(system, thread_id, run_id)
    assert first["args"] == {"text": "a"}

    yes = {"call_id": first["call_id"], "approved": True}
    assert (await signal(system, run_id, yes)).is_success
    second = await waiting_for_another(system, thread_id, run_id, first["call_id"])
    assert second["args"] == {"text": "b"}
    assert RAN == ["stamp:a"]
    again = await signal(system, run_id, yes)
    assert again.status_code == 409  # answered already: it cannot answer the second

    no = {"call_id": second["call_id"], "approved": False}
    assert (await signal(system, run_id, no)).is_success
    view = await system.wait_for_run(thread_id, run_id)

    assert RAN == ["stamp:a"]
    assert view["messages"][-1]["content"] == (
        'stamp returned "A". stamp returned "a person denied the call to stamp (no reason '
        'given). Do not call it again unasked.". ' + answered(question)
    )
    kinds = [e["type"] for e in await events_of(system, thread_id)]
    assert (kinds.count("run.waiting"), kinds.count("tool.result")) == (2, 2)


async def retried(system: System, thread_id: str, run_id: str) -> None:
    """Cancel the waiting run, then retry it: it runs again from scratch."""
    assert (await system.http.post(f"/api/runs/{run_id}/cancel")).status_code == 202
    await system.wait_for_run(thread_id, run_id)
    assert (await system.http.post(f"/api/runs/{run_id}/retry")).status_code == 202


async def test_a_retried_run_runs_its_calls_again_and_shows_them(system: System) -> None:
    """Retry is from scratch, and the view clears a restarted run's calls: the run
    must not reuse its earlier life's results, and so journals its calls again."""
    question = 'both [[tool calculator {"expression": "2+2"}]] [[tool stamp {"text": "a"}]]'
    thread_id, run_id = await ask(system, question)
    await waiting_call(system, thread_id, run_id)  # calculator ran, stamp waits
    await retried(system, thread_id, run_id)

    call = await waiting_call(system, thread_id, run_id)
    assert (await signal(system, run_id, {"call_id": call["call_id"], "approved": True})).is_success
    view = await system.wait_for_run(thread_id, run_id)

    run = view["runs"][run_id]
    assert run["status"] == "completed"
    assert view["messages"][-1]["content"].startswith('calculator returned 4. stamp returned "A".')
    assert [(c["tool"], c["args"]) for c in run["tools"]] == [
        ("calculator", {"expression": "2+2"}),
        ("stamp", {"text": "a"}),
    ]
    kinds = [e["type"] for e in await events_of(system, thread_id)]
    assert kinds.count("tool.called") == 4  # calculator and stamp, in each life


async def test_a_retried_run_asks_again_and_its_park_still_waits(system: System) -> None:
    """An approval given before the retry answers nothing after it; yet the run hash
    still counts that signal, so the new park must count it too, or it would wake
    at once, again and again, without an answer."""
    question = 'both [[tool stamp {"text": "a"}]] [[tool stamp {"text": "b"}]]'
    thread_id, run_id = await ask(system, question)
    first = await waiting_call(system, thread_id, run_id)
    assert (
        await signal(system, run_id, {"call_id": first["call_id"], "approved": True})
    ).is_success
    await waiting_for_another(system, thread_id, run_id, first["call_id"])
    await retried(system, thread_id, run_id)

    again = await waiting_call(system, thread_id, run_id)
    assert again["args"] == {"text": "a"}  # asked again: the earlier yes is not reused
    events = await events_of(system, thread_id)
    restart = max(i for i, e in enumerate(events) if e["type"] == "run.restarted")
    # One start and one park since the retry (a park that woke at once would go on).
    assert [e["type"] for e in events[restart:] if e["type"] in ("run.started", "run.waiting")] == [
        "run.started",
        "run.waiting",
    ]
    assert (
        await signal(system, run_id, {"call_id": again["call_id"], "approved": True})
    ).is_success
    second = await waiting_for_another(system, thread_id, run_id, again["call_id"])
    assert (
        await signal(system, run_id, {"call_id": second["call_id"], "approved": True})
    ).is_success
    view = await system.wait_for_run(thread_id, run_id)

    assert view["runs"][run_id]["status"] == "completed"
    assert RAN == ["stamp:a", "stamp:a", "stamp:b"]


async def test_the_wait_outlives_its_worker(real_backend: Backend, settings: Settings) -> None:
    question = 'file it [[tool stamp {"text": "late"}]]'
    llm = ScriptedLLM(words=WORDS, delay_ms=0)
    async with running_system(real_backend, settings, llm=llm) as first:
        thread_id, run_id = await ask(first, question)
        call_id = (await waiting_call(first, thread_id, run_id))["call_id"]
    # Every worker gone: the wait is only in Redis, with no lease and no work item.
    store = first.runtime.store
    state = await store.run_state(run_id, thread_id)
    assert (state["status"], state["waiting_for"], state["owner"]) == ("waiting", "approval", "")
    assert state["approval_call"] == call_id

    async with running_system(real_backend, settings, llm=llm) as second:
        assert (await second.view(thread_id))["runs"][run_id]["status"] == "waiting"
        yes = await signal(second, run_id, {"call_id": call_id, "approved": True})
        assert yes.status_code == 202, yes.text
        view = await second.wait_for_run(thread_id, run_id)

    assert view["runs"][run_id]["status"] == "completed"
    assert view["messages"][-1]["content"] == 'stamp returned "LATE". ' + answered(question)
    assert RAN == ["stamp:late"]


class TalksFirstLLM(ScriptedLLM):
    """Writes a sentence before its tool calls, as real models do; and, like one, gives
    its calls new ids each time it is asked."""

    def __init__(self) -> None:
        super().__init__(words=WORDS, delay_ms=0)
        self.asked = 0

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        self.asked += 1
        calling = False
        async for part in super().stream(prompt):
            if isinstance(part, ToolCallPart):
                if not calling:
                    calling = True
                    yield TextPart("Let me stamp that. ")
                part = ToolCallPart(f"{part.call_id}_{self.asked}", part.name, part.args)
            yield part


async def test_text_before_the_call_stays_once_and_a_new_call_id_gets_the_answer(
    real_backend: Backend, settings: Settings
) -> None:
    question = 'file it [[tool stamp {"text": "ok"}]]'
    async with running_system(real_backend, settings, llm=TalksFirstLLM()) as system:
        thread_id, run_id = await ask(system, question)
        call = await waiting_call(system, thread_id, run_id)
        reply = (await system.view(thread_id))["messages"][-1]
        assert (reply["content"], reply["status"]) == ("Let me stamp that. ", "waiting")

        yes = await signal(system, run_id, {"call_id": call["call_id"], "approved": True})
        assert yes.status_code == 202
        view = await system.wait_for_run(thread_id, run_id)
        history = await events_of(system, thread_id)

    # Asked again, the model called with another id: the answer still reached the call,
    # which ran once, under the id the person saw; the text is there once.
    assert RAN == ["stamp:ok"]
    assert [e["call_id"] for e in history if e["type"] == "tool.result"] == [call["call_id"]]
    assert [e["type"] for e in history].count("run.waiting") == 1
    assert view["messages"][-1]["content"] == (
        'Let me stamp that. stamp returned "OK". ' + answered(question)
    )


@pytest.mark.slow
def test_a_wait_outlives_a_worker_killed_with_kill_9(redis_url: str, tmp_path: Path) -> None:
    """Real processes: the shipped researcher's fetch_url needs approval. Its worker
    is killed while the run waits; a worker started afterwards finishes it."""
    cluster = Cluster(redis_url, tmp_path)
    try:
        cluster.start(workers=1)
        thread_id = cluster.thread()
        question = '@researcher read [[tool fetch_url {"url": "https://example.invalid/"}]]'
        run_id = cluster.ask(thread_id, question)
        approval = wait_for(lambda: cluster.view(thread_id)["runs"][run_id]["approval"])
        [worker] = cluster.workers
        os.kill(worker.pid, signals.SIGKILL)
        worker.wait()
        assert cluster.view(thread_id)["runs"][run_id]["status"] == "waiting"

        cluster.add_worker()
        yes = {"call_id": approval["call_id"], "approved": True}
        response = cluster.http.post(
            f"/api/runs/{run_id}/signal", json={"name": "approval", "payload": yes}
        )
        assert response.status_code == 202, response.text
        wait_for(
            lambda: cluster.view(thread_id)["runs"][run_id]["status"] == "completed", within=30
        )
        events = [e for e in cluster.events(thread_id) if e.get("run_id") == run_id]
    finally:
        cluster.close()
    kinds = [e["type"] for e in events]
    assert (kinds.count("tool.called"), kinds.count("tool.result")) == (1, 1)
    [result] = [e for e in events if e["type"] == "tool.result"]
    # It ran (once), and said what fetch_url says here: no hosts are allowed.
    assert result["is_error"] and "fetch_url is off here" in result["result"]
    assert [e["attempt"] for e in events if e["type"] == "run.started"] == [1, 2]


class DeskAndClerkLLM:
    """desk stamps and hands off to clerk in one turn; clerk says a word, stamps, ends."""

    name = "desk-and-clerk"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, prompt: Prompt) -> AsyncIterator[Part]:
        self.calls += 1
        used = [
            b.name
            for m in prompt.messages
            if m.role == "assistant"
            for b in m.blocks
            if isinstance(b, ToolUseBlock)
        ]
        if prompt.system == DESK_SYSTEM and HANDOFF_TOOL not in used:
            yield ToolCallPart("desk_stamp", "stamp", {"text": "front"})
            yield ToolCallPart("desk_handoff", HANDOFF_TOOL, {"agent": "clerk"})
            stop = "tool_use"
        elif prompt.system == CLERK_SYSTEM and used.count("stamp") < 2:
            yield TextPart("Stamping. ")
            yield ToolCallPart("clerk_stamp", "stamp", {"text": "back"})
            stop = "tool_use"
        else:
            yield TextPart("done")
            stop = "end_turn"
        yield UsagePart(1, 1, 0, 0, "desk-and-clerk")
        yield StopPart(stop)


async def test_approvals_before_and_after_a_handoff(
    real_backend: Backend, settings: Settings
) -> None:
    llm = DeskAndClerkLLM()
    async with running_system(real_backend, settings, llm=llm) as system:
        thread_id = await system.new_thread()
        run_id = (await system.send(thread_id, "take this", agent="desk"))["run_id"]

        # desk's turn holds a stamp and the hand-off: the stamp waits first, in desk's reply.
        first = await waiting_call(system, thread_id, run_id)
        view = await system.view(thread_id)
        reply_id = view["runs"][run_id]["reply_id"]
        assert (first["args"], first["message_id"]) == ({"text": "front"}, reply_id)
        assert view["messages"][-1]["id"] == reply_id
        assert view["messages"][-1]["status"] == "waiting"
        yes = {"call_id": first["call_id"], "approved": True}
        assert (await signal(system, run_id, yes)).status_code == 202

        # Then the clerk, in a message of its own, waits for its stamp.
        second = await waiting_for_another(system, thread_id, run_id, first["call_id"])
        clerks = handoff_message_id(run_id, 1)
        assert (second["args"], second["message_id"]) == ({"text": "back"}, clerks)
        view = await system.view(thread_id)
        by_id = {m["id"]: m for m in view["messages"]}
        assert by_id[reply_id]["status"] == "completed"
        assert (by_id[clerks]["agent"], by_id[clerks]["status"]) == ("clerk", "waiting")
        assert by_id[clerks]["content"] == "Stamping. "
        assert RAN == ["stamp:front"]
        yes = {"call_id": second["call_id"], "approved": True}
        assert (await signal(system, run_id, yes)).status_code == 202
        view = await system.wait_for_run(thread_id, run_id)
        history = [e for e in await events_of(system, thread_id) if e.get("run_id") == run_id]

    assert view["runs"][run_id]["status"] == "completed"
    assert {m["id"]: m for m in view["messages"]}[clerks]["content"] == "Stamping. done"
    assert RAN == ["stamp:front", "stamp:back"]
    kinds = [e["type"] for e in history]
    assert kinds.count("agent.handoff") == 1 and kinds.count("run.waiting") == 2
    # Every model call's usage is journaled once, the one parked with its turn too.
    assert kinds.count("model.usage") == llm.calls
