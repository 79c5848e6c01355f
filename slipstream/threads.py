"""Threads and messages: what any process may start, as guarded appends."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from slipstream import events as ev
from slipstream import tracing
from slipstream.keys import new_id, new_run_id, new_thread_id
from slipstream.store import Admit, Append, EventStore

# A resend with the same client id must find the first send's dedupe key, so
# the key is derived from the client id.
_CLIENT_NAMESPACE = uuid.UUID("5b1f2b9e-8a52-4b8e-9a0e-6a4c3f1d2e7a")


@dataclass(frozen=True)
class SentRun:
    """One of the runs a message started: which agent answers, in which message."""

    run_id: str
    agent: str
    reply_id: str


@dataclass(frozen=True)
class Sent:
    thread_id: str
    message_id: str
    run_id: str  # the first run's
    event_id: str
    duplicate: bool
    runs: tuple[SentRun, ...] = ()


def message_dedupe_key(thread_id: str, client_id: str) -> str:
    """The dedupe key of a message sent with a client id (named as it always was, so a
    resend across an upgrade still finds the first send)."""
    return uuid.uuid5(_CLIENT_NAMESPACE, f"{thread_id}\n{client_id}\nevent").hex


async def create_thread(store: EventStore, title: str = "", owner: str = "") -> tuple[str, str]:
    """Returns the new thread's id and the id of its first event."""
    return await create_thread_with_id(store, new_thread_id(), title, owner)


async def create_thread_with_id(
    store: EventStore, thread_id: str, title: str, owner: str = ""
) -> tuple[str, str]:
    """Create a thread whose id the caller chose; ThreadExists if it was created before.

    `owner` (a user name) may use it, and is written as its owner in the same call.
    """
    appended = await store.append(
        Append(
            thread_id=thread_id,
            events=[ev.ThreadCreated(title=title, owner=owner)],
            existence="new",
            dedupe=True,
            access=("owner", owner) if owner else None,
        )
    )
    return thread_id, appended.ids[0]


async def change_members(
    store: EventStore, thread_id: str, user: str, *, add: bool, by: str
) -> str:
    """Add or remove a member, with its event, in one append; returns the event's id."""
    event: ev.Event = (
        ev.ThreadMemberAdded(user=user, by=by) if add else ev.ThreadMemberRemoved(user=user, by=by)
    )
    appended = await store.append(
        Append(
            thread_id=thread_id,
            events=[event],
            access=("add" if add else "remove", user),
        )
    )
    return appended.ids[0]


async def send_message(
    store: EventStore,
    thread_id: str,
    content: str,
    agent: str | Sequence[str],
    *,
    client_id: str | None = None,
    expected_version: int | None = None,
    on_busy: Admit = "queue",
    routed: tuple[ev.RoutedBy, str] | None = None,
    with_run: Callable[[str], list[ev.Event]] | None = None,
    edit_of: str | None = None,
    parent_id: str | None = None,
) -> Sent:
    """Append the message and the runs that answer it, and admit them, in one append.

    `agent` is one agent's name or several (distinct, already checked): one run
    per agent, each answering in its own message and admitted in its agent's
    lane, so they run at once. The message's own `agent` and the returned
    `run_id` are the first's. `routed` is how the agents were chosen (how, and
    why): it is written as `agent.routed` between the message and its runs.
    `with_run(run_id)` gives more events for that append, after the runs' requests
    (the router's classification call: its `model.usage` is charged to the first run).
    `edit_of` makes the message a new version of that user message; `parent_id` puts
    it after that user message instead of the newest (the view's branches).

    A resend with the same client id within the store's resend window
    (SLIPSTREAM_DEDUPE_WINDOW_S) answers the first send's ids and writes
    nothing; after the window it is a new message.
    """
    agents = [agent] if isinstance(agent, str) else list(agent)
    if not agents or len(set(agents)) != len(agents):
        raise ValueError(f"send_message needs distinct agents, got {agents!r}")
    # Fresh ids even with a client id: a resend in the window gets the first send's
    # back from its events; one after the window is a new message with ids of its own.
    message_id = new_id("m")
    runs = tuple(SentRun(new_run_id(thread_id), name, new_id("m")) for name in agents)
    first = runs[0]
    events: list[ev.Event] = [
        ev.MessageSent(
            message_id=message_id,
            content=content,
            agent=first.agent,
            run_id=first.run_id,
            client_id=client_id,
            edit_of=edit_of,
            parent_id=parent_id,
        )
    ]
    if routed is not None:
        by, reason = routed
        events.append(ev.AgentRouted(message_id=message_id, agents=agents, by=by, reason=reason))
    # The request's trace (none when untraced): the runs' attempts join it.
    traceparent = tracing.current_traceparent()
    events += [
        ev.RunRequested(
            run_id=run.run_id,
            message_id=message_id,
            reply_id=run.reply_id,
            agent=run.agent,
            traceparent=traceparent,
        )
        for run in runs
    ]
    if with_run is not None:
        events.extend(with_run(runs[0].run_id))
    appended = await store.append(
        Append(
            thread_id=thread_id,
            events=events,
            existence="exists",
            expected_version=expected_version,
            dedupe=True,
            dedupe_key=message_dedupe_key(thread_id, client_id) if client_id else None,
            run_id=first.run_id,
            run_fields=tracing.with_trace(
                {"status": "queued", "thread": thread_id, "agent": first.agent}, traceparent
            ),
            work=True,
            admit=on_busy,
            refuse_if_queue_full=True,
            more_runs=[(run.run_id, run.agent) for run in runs[1:]],
        )
    )
    if appended.duplicate:
        before = await _sent_before(store, thread_id, appended.ids, first.agent)
        if before is not None:
            return before
    return Sent(thread_id, message_id, runs[0].run_id, appended.ids[0], appended.duplicate, runs)


async def earlier_send(store: EventStore, thread_id: str, client_id: str) -> Sent | None:
    """The send a resend with `client_id` repeats, while the resend window remembers it:
    what `send_message` would answer, found without choosing agents again (the router
    may ask a model). None when there is none, or its events cannot say."""
    ids = await store.remembered_ids(thread_id, message_dedupe_key(thread_id, client_id))
    if not ids:
        return None
    return await _sent_before(store, thread_id, ids, "")


async def _sent_before(
    store: EventStore, thread_id: str, ids: Sequence[str], agent: str
) -> Sent | None:
    """The first send, from its own events (`ids`, what it wrote): the ids it gave."""
    written = await store.read(thread_id, start=ids[0], count=len(ids))
    said = [s.event for s in written]
    if not (said and isinstance(said[0], ev.MessageSent) and said[0].run_id):
        return None
    message_id, run_id = said[0].message_id, said[0].run_id
    runs = tuple(
        SentRun(e.run_id, e.agent, e.reply_id)
        for e in said
        if isinstance(e, ev.RunRequested) and e.message_id == message_id
    ) or (SentRun(run_id, said[0].agent or agent, ""),)
    return Sent(thread_id, message_id, runs[0].run_id, ids[0], True, runs)


async def update_thread(
    store: EventStore, thread_id: str, *, title: str | None = None, archived: bool | None = None
) -> None:
    """Rename and/or archive a thread (ThreadNotFound if it does not exist)."""
    events: list[ev.Event] = []
    if title is not None:
        events.append(ev.ThreadRenamed(title=title))
    if archived is not None:
        events.append(ev.ThreadArchived(archived=archived))
    if events:
        await store.append(Append(thread_id=thread_id, events=events, dedupe=True))
