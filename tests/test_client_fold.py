"""The web chat's fold (static/js/fold.js) agrees with the server's, event for event.

Real histories (chat answers, a cancel, a retry, a failure, a restart, a
regenerate, a rename and archive, an approval workflow with a revision, chat
answers waiting for approval of a tool call, a routed message, tool calls, a
hand-off, a tool call parked for approval, the review workflow's three agents) are
folded by the server; the page's fold, run in Node, must reach the same view
from an empty one and from every snapshot along the way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from consumers.llm.scripted import ScriptedLLM
from consumers.worker import Worker
from projections.thread_view import ThreadView, fold
from service import commands
from slipstream import codec
from slipstream import events as ev
from slipstream.config import Settings
from slipstream.errors import ProviderError
from slipstream.store import Append, EventStore, Stored
from tests.fake_llm import FlakyLLM
from tests.test_workflows import FakeClock

SCRIPT = Path(__file__).resolve().parent / "js" / "fold_replay.mjs"


def js_fold(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; the web chat's fold cannot be checked")
    done = subprocess.run(
        [node, str(SCRIPT)], input=json.dumps(cases), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    views: list[dict[str, Any]] = json.loads(done.stdout)
    return views


async def histories(store: EventStore, settings: Settings) -> list[str]:
    clock = FakeClock()
    worker = Worker(store.backend, store, ScriptedLLM(words=25, delay_ms=0), settings, clock=clock)
    threads = []

    chat, _ = await commands.create_thread(store, "chat")
    first = await commands.send_message(store, chat, "first question", "assistant")
    await commands.send_message(store, chat, "second question", "assistant")
    await worker.run_once()
    await commands.regenerate(store, worker.runner.views, first.run_id)
    await worker.run_once()
    await commands.update_thread(store, chat, title="renamed", archived=True)
    threads.append(chat)

    # An edited message on a branch of its own, and a reply going on from the first branch.
    edited, _ = await commands.create_thread(store, "edited")
    one = await commands.send_message(store, edited, "one", "assistant")
    await commands.send_message(store, edited, "two", "assistant")
    await worker.run_once()
    await commands.send_message(store, edited, "one, again", "assistant", edit_of=one.message_id)
    await commands.send_message(store, edited, "three", "assistant", parent_id=one.message_id)
    await worker.run_once()
    # Ids no API would take (an imported history may hold them): the newest message then.
    await commands.send_message(store, edited, "four", "assistant", parent_id="mnowhere")
    await commands.send_message(store, edited, "five", "assistant", edit_of="mnowhere")
    await worker.run_once()  # four, then five, which waits for four in the agent's lane
    await worker.run_once()
    threads.append(edited)

    cancelled, _ = await commands.create_thread(store)
    queued = await commands.send_message(store, cancelled, "one", "assistant")
    await commands.cancel_run(store, queued.run_id)
    threads.append(cancelled)

    flaky_thread, _ = await commands.create_thread(store)
    await commands.send_message(store, flaky_thread, "try twice", "assistant")
    boom = ProviderError("overloaded", retryable=True)
    flaky = Worker(
        store.backend,
        store,
        FlakyLLM([boom, ProviderError("no", retryable=False)]),
        settings,
        clock=clock,
    )
    await flaky.run_once()
    clock.advance(minutes=1)
    await flaky.run_once()
    runs = (await worker.runner.views.current(flaky_thread)).runs
    await commands.restart_run(store, next(iter(runs)))
    await worker.run_once()
    threads.append(flaky_thread)

    approval, _ = await commands.create_thread(store)
    asked = await commands.send_message(store, approval, "announce it", "approval")
    await worker.run_once()
    await commands.signal_run(
        store, asked.run_id, "approval", {"approved": False, "feedback": "shorter"}
    )
    await worker.run_once()
    await commands.signal_run(store, asked.run_id, "approval", {"approved": True})
    await worker.run_once()
    threads.append(approval)

    # Chat answers waiting for a person's yes to a tool call: one answered, one left waiting.
    for answer in (True, None):
        asking, _ = await commands.create_thread(store)
        fetch = 'read [[tool fetch_url {"url": "https://example.invalid/"}]]'
        asked = await commands.send_message(store, asking, fetch, "researcher")
        await worker.run_once()
        call_id = (await store.run_state(asked.run_id, asking))["approval_call"]
        if answer is not None:
            yes = {"call_id": call_id, "approved": answer}
            await commands.signal_run(store, asked.run_id, "approval", yes)
            await worker.run_once()
        threads.append(asking)

    # The review workflow: three agent turns, each a message of its agent's own.
    review, _ = await commands.create_thread(store)
    await commands.send_message(store, review, "a note for the team", "review")
    await worker.run_once()
    threads.append(review)

    # Model usage of three agents in one thread.
    agents, _ = await commands.create_thread(store)
    for agent in ("assistant", "writer", "critic"):
        await commands.send_message(store, agents, f"a question for {agent}", agent)
        await worker.run_once()
    threads.append(agents)

    # Routed by a rule to the researcher, who calls two tools (one fails); a hand-off.
    tools, _ = await commands.create_thread(store)
    await commands.send_message(
        store,
        tools,
        'calculate [[tool calculator {"expression": "2+3"}]]'
        ' [[tool calculator {"expression": "1/0"}]]',
        "researcher",
        routed=("rule", "researcher's rule matched 'calculate'"),
    )
    await worker.run_once()
    await commands.send_message(store, tools, "over to you [[handoff writer]]", "assistant")
    await worker.run_once()
    threads.append(tools)

    # A call parked for approval, then denied, and one cut short; long texts in them are cut.
    parked, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, parked, "fetch it", "researcher")
    long_url = "https://example.com/" + "é" * 2500
    await store.append(
        Append(
            thread_id=parked,
            events=[
                ev.RunStarted(run_id=sent.run_id, attempt=1, worker="w:1:a", token=1),
                ev.ToolCalled(
                    run_id=sent.run_id, call_id="c1", tool="fetch_url", args={"url": long_url}
                ),
                ev.RunWaiting(run_id=sent.run_id, waiting_for="approval"),
                ev.SignalReceived(
                    run_id=sent.run_id,
                    name="approval",
                    payload={"call_id": "c1", "approved": False, "reason": "no"},
                ),
                ev.RunResumed(run_id=sent.run_id),
                ev.ToolResult(run_id=sent.run_id, call_id="c1", result="denied: no", is_error=True),
                ev.ToolCalled(
                    run_id=sent.run_id,
                    call_id="c2",
                    tool="fetch_url",
                    args={"url": "https://example.com/" + "x" * 3000},
                ),
                ev.RunCancelled(run_id=sent.run_id, reason="stopped"),
            ],
        )
    )
    threads.append(parked)

    # A call parked for approval whose arguments are long: the wait's copy is cut too
    # (after every worker pass, which would run it).
    long_wait, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, long_wait, "fetch this", "researcher")
    long_args = {"url": "https://example.com/" + "ü" * 2500}
    await store.append(
        Append(
            thread_id=long_wait,
            events=[
                ev.RunStarted(run_id=sent.run_id, attempt=1, worker="w:1:a", token=1),
                ev.ToolCalled(run_id=sent.run_id, call_id="w1", tool="fetch_url", args=long_args),
                ev.RunWaiting(
                    run_id=sent.run_id,
                    waiting_for="approval",
                    call_id="w1",
                    tool="fetch_url",
                    args=long_args,
                ),
            ],
        )
    )
    threads.append(long_wait)
    return threads


async def test_the_page_folds_events_as_the_server_does(
    store: EventStore, settings: Settings
) -> None:
    cases, expected, finals = [], [], []
    for thread_id in await histories(store, settings):
        stored = await store.read(thread_id)
        empty = ThreadView.empty(thread_id, store.stream_key(thread_id))
        final = fold(empty, stored).model_dump(mode="json")
        finals.append(final)
        for cut in range(0, len(stored) + 1, 3):  # from snapshots all along the history
            snapshot = fold(empty, stored[:cut]).model_dump(mode="json")
            cases.append({"start": snapshot, "events": frames(stored[cut:])})
            expected.append(final)
    for got, want in zip(js_fold(cases), expected, strict=True):
        assert comparable(got) == comparable(want)
    # The histories do hold a waiting tool call, so its fold is compared too.
    assert any(
        run["approval"] and run["approval"]["tool"] == "fetch_url"
        for view in expected
        for run in view["runs"].values()
    )
    # The histories do hold what each part of the fold is about, so it is compared too.
    usage, tools, parked, _ = finals[-4:]
    assert set(usage["usage"]["by_agent"]) == {"assistant", "writer", "critic"}
    assert tools["messages"][0]["routed"]["by"] == "rule"
    runs = list(tools["runs"].values())
    assert [call["status"] for call in runs[0]["tools"]] == ["completed", "failed"]
    assert runs[1]["handoffs"][0]["to_agent"] == "writer"
    calls = next(iter(parked["runs"].values()))["tools"]
    assert [call["status"] for call in calls] == ["failed", "running"]
    assert [call["denied"] for call in calls] == [True, False]
    assert calls[0]["decided_at"] is not None and calls[1]["decided_at"] is None
    # An approved call knows when it was approved, a waiting one's wait is cut to size.
    approved = [
        call
        for view in finals
        for run in view["runs"].values()
        for call in run["tools"]
        if call["decided_at"] is not None and not call["denied"]
    ]
    assert approved and all(call["ended_at"] >= call["decided_at"] for call in approved)
    waits = [run["approval"] for view in finals for run in view["runs"].values() if run["approval"]]
    long_urls = [wait["args"]["url"] for wait in waits if len(wait["args"]["url"]) > 2000]
    assert long_urls and all(len(url) == 2001 and url.endswith("…") for url in long_urls)
    assert calls[0]["args"]["url"].endswith("é…")  # cut, by code points on both sides
    # The review's turns are attributed to their agents, not to the workflow.
    [review] = [v for v in finals if v["messages"][0]["agent"] == "review"]
    assert [m["agent"] for m in review["messages"]] == ["review", "writer", "critic", "writer"]


def frames(stored: list[Stored]) -> list[dict[str, Any]]:
    return [{"id": s.id, "event": codec.event_json(s.event)} for s in stored]


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    """Drop what is null or empty on one side and absent on the other."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v not in (None, [], {})}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    cleaned: dict[str, Any] = clean(view)
    return cleaned
