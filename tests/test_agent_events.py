"""The agent events (routing, tools, hand-offs, usage) round-trip and leave both folds alone.

Until the chat and the thread view show them, a thread holding them must fold
to the same messages and runs as one without them, in the server's fold and
in the page's (static/js/fold.js).
"""

from __future__ import annotations

from consumers.llm.scripted import ScriptedLLM
from consumers.worker import Worker
from projections.thread_view import ThreadView, fold
from service import commands
from slipstream import events as ev
from slipstream.config import Settings
from slipstream.store import Append, EventStore
from tests.test_client_fold import comparable, frames, js_fold


def agent_events(message_id: str, run_id: str) -> list[ev.Event]:
    return [
        ev.AgentRouted(
            message_id=message_id, agents=["researcher"], by="rule", reason="researcher's rule"
        ),
        ev.ToolCalled(run_id=run_id, call_id="c1", tool="calculator", args={"expression": "2+2"}),
        ev.ToolResult(run_id=run_id, call_id="c1", result=4),
        ev.ToolResult(run_id=run_id, call_id="c2", result="no such host", is_error=True),
        ev.AgentHandoff(run_id=run_id, from_agent="researcher", to_agent="writer", reason="prose"),
        ev.ModelUsage(
            run_id=run_id, agent="researcher", model="scripted", input_tokens=9, output_tokens=4
        ),
    ]


async def test_both_folds_ignore_the_agent_events(store: EventStore, settings: Settings) -> None:
    worker = Worker(store.backend, store, ScriptedLLM(words=8, delay_ms=0), settings)
    plain, _ = await commands.create_thread(store, "t")
    busy, _ = await commands.create_thread(store, "t")
    for thread_id in (plain, busy):
        sent = await commands.send_message(store, thread_id, "how many moons", "assistant")
        if thread_id == busy:
            await store.append(
                Append(thread_id=busy, events=agent_events(sent.message_id, sent.run_id))
            )
        await worker.run_once()

    views = {}
    for thread_id in (plain, busy):
        stored = await store.read(thread_id)
        empty = ThreadView.empty(thread_id, store.stream_key(thread_id))
        views[thread_id] = (fold(empty, stored), empty, stored)
    with_events, empty, stored = views[busy]
    without = views[plain][0]
    assert with_events.problems == []
    assert [(m.role, m.content, m.status) for m in with_events.messages] == [
        (m.role, m.content, m.status) for m in without.messages
    ]
    assert [r.status for r in with_events.runs.values()] == ["completed"]
    assert {e.event.type for e in stored} >= {"agent.routed", "tool.called", "model.usage"}

    (page,) = js_fold([{"start": empty.model_dump(mode="json"), "events": frames(stored)}])
    assert comparable(page) == comparable(with_events.model_dump(mode="json"))
