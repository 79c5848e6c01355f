"""A thread's events as a timeline for a person: who did what, when.

Pure: it reads nothing. Consecutive deltas of one answer are one line (how
many, how many characters), a message's and an answer's text is kept whole,
everything else is one short line (arguments and results cut to TEXT_CHARS).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from projections.thread_view import stream_ms
from slipstream import events as ev
from slipstream.codec import Unreadable
from slipstream.store import Stored

TEXT_CHARS = 200  # of a message or a tool's arguments in a timeline line


@dataclass
class Item:
    """One line of a thread's timeline: an event, or a run of deltas summarised."""

    id: str  # stream entry id (the first delta's, for a summary)
    at_ms: int
    type: str
    who: str
    what: str
    run: str | None = None
    text: str | None = None  # a message's or an answer's whole text
    count: int = 1  # events the line stands for (deltas summarised)
    chars: int = 0  # of the text the deltas it stands for wrote
    last_id: str | None = None  # the last delta's id, for a summary


def timeline(stored: Iterable[Stored]) -> list[Item]:
    """The events as lines for a person: consecutive deltas of one message as one line."""
    agents: dict[str, str] = {}  # run id -> the agent writing it now
    tools: dict[str, str] = {}  # call id -> tool name
    items: list[Item] = []
    for entry in stored:
        event = entry.event
        at = stream_ms(entry.id)
        if isinstance(event, Unreadable):
            items.append(Item(entry.id, at, "unreadable", "-", f"unreadable entry: {event.reason}"))
            continue
        run_id = getattr(event, "run_id", None)
        agent = agents.get(run_id or "", "agent")
        if isinstance(event, ev.MessageDelta):
            if event.agent:
                agents[event.run_id] = event.agent
            last = items[-1] if items else None
            if last is not None and last.type == "message.delta" and last.run == event.run_id:
                last.count += 1
                last.chars += len(event.text)
                last.last_id = entry.id
                last.what = _deltas(last.count, last.chars, event.attempt)
            else:
                items.append(
                    Item(
                        entry.id,
                        at,
                        event.type,
                        agents.get(event.run_id, "agent"),
                        _deltas(1, len(event.text), event.attempt),
                        event.run_id,
                        chars=len(event.text),
                        last_id=entry.id,
                    )
                )
            continue
        who, what, text = _describe(event, agent, tools, agents)
        items.append(Item(entry.id, at, event.type, who, what, run_id, text))
    return items


def _deltas(count: int, chars: int, attempt: int) -> str:
    return f"wrote {count} delta{'s' if count != 1 else ''} (attempt {attempt}), {chars} chars"


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "…"


def _describe(
    event: ev.Event, agent: str, tools: dict[str, str], agents: dict[str, str]
) -> tuple[str, str, str | None]:
    """Who did it, what it was (one line), and a whole text worth showing."""
    match event:
        case ev.ThreadCreated():
            title = f" {_short(event.title)!r}" if event.title else ""
            return event.owner or "user", f"created the thread{title}", None
        case ev.ThreadRenamed():
            return "user", f"renamed it {_short(event.title)!r}", None
        case ev.ThreadArchived():
            return "user", "archived it" if event.archived else "unarchived it", None
        case ev.ThreadMemberAdded():
            return event.by, f"added member {event.user}", None
        case ev.ThreadMemberRemoved():
            return event.by, f"removed member {event.user}", None
        case ev.MessageSent():
            to = f" to {event.agent}" if event.agent else ""
            return "user", f"sent {event.message_id}{to}", event.content
        case ev.RunRequested():
            agents[event.run_id] = event.agent
            return event.agent, f"run requested, answering {event.message_id}", None
        case ev.RunStarted():
            return (
                event.worker,
                f"attempt {event.attempt} started (token {event.token})",
                None,
            )
        case ev.MessageCompleted():
            if event.agent:
                agents[event.run_id] = event.agent
            return agents.get(event.run_id, agent), f"answered {event.message_id}", event.text
        case ev.RunCompleted():
            result = "" if event.result is None else f": {_short(event.result)}"
            return agent, f"run completed{result}", None
        case ev.RunCancelRequested():
            return "user", f"asked to cancel{_reason(event.reason)}", None
        case ev.RunCancelled():
            return agent, f"run cancelled{_reason(event.reason)}", None
        case ev.RunFailed():
            return agent, f"run failed: {event.reason}", None
        case ev.RunRetrying():
            return (
                agent,
                f"attempt {event.attempt} failed: {event.reason}; retry in {event.delay_ms} ms",
                None,
            )
        case ev.RunRestarted():
            return "user", f"run restarted{_reason(event.reason)}", None
        case ev.RunWaiting():
            extra = f" for {event.tool}({_short(event.args)})" if event.tool else ""
            return agent, f"waiting for {event.waiting_for}{extra}", None
        case ev.RunResumed():
            return agent, f"resumed{_reason(event.reason)}", None
        case ev.SignalReceived():
            return "user", f"signal {event.name}: {_short(event.payload)}", None
        case ev.StepStarted():
            return (
                agent,
                f"step #{event.op} {event.step} ({event.kind}) attempt {event.attempt}",
                None,
            )
        case ev.StepCompleted():
            return agent, f"step #{event.op} {event.step} completed: {_short(event.result)}", None
        case ev.StepFailed():
            final = ", final" if event.final else ""
            return (
                agent,
                f"step #{event.op} {event.step} failed "
                f"(attempt {event.attempt}{final}): {event.error}",
                None,
            )
        case ev.TimerScheduled():
            return agent, f"timer for {event.purpose} due at {event.due_ms}", None
        case ev.TimerFired():
            return agent, f"timer due at {event.due_ms} fired", None
        case ev.AgentRouted():
            return event.by, f"routed {event.message_id} to {', '.join(event.agents)}", None
        case ev.AgentHandoff():
            agents[event.run_id] = event.to_agent
            return event.from_agent, f"handed off to {event.to_agent}{_reason(event.reason)}", None
        case ev.ToolCalled():
            tools[event.call_id] = event.tool
            return agent, f"called {event.tool}({_short(event.args)}) [{event.call_id}]", None
        case ev.ToolResult():
            tool = tools.get(event.call_id, "tool")
            outcome = "error" if event.is_error else "returned"
            return f"tool {tool}", f"{outcome} {_short(event.result)} [{event.call_id}]", None
        case ev.ModelUsage():
            return (
                agent,
                f"model {event.model}: {event.input_tokens} in, {event.output_tokens} out tokens",
                None,
            )
        case ev.ContextTrimmed():
            return (
                agent,
                f"context trimmed: {event.dropped_messages} oldest messages left out",
                None,
            )
    return agent, event.type, None


def _reason(reason: str) -> str:
    return f": {reason}" if reason else ""
