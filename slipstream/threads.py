"""Threads and messages: what any process may start, as guarded appends."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from slipstream import events as ev
from slipstream.keys import new_id, new_run_id, new_thread_id
from slipstream.store import Admit, Append, EventStore

# A resend with the same client id must find the first send's dedupe key, so
# the key is derived from the client id.
_CLIENT_NAMESPACE = uuid.UUID("5b1f2b9e-8a52-4b8e-9a0e-6a4c3f1d2e7a")


@dataclass(frozen=True)
class Sent:
    thread_id: str
    message_id: str
    run_id: str
    event_id: str
    duplicate: bool


def message_dedupe_key(thread_id: str, client_id: str) -> str:
    """The dedupe key of a message sent with a client id (named as it always was, so a
    resend across an upgrade still finds the first send)."""
    return uuid.uuid5(_CLIENT_NAMESPACE, f"{thread_id}\n{client_id}\nevent").hex


async def create_thread(store: EventStore, title: str = "") -> tuple[str, str]:
    """Returns the new thread's id and the id of its first event."""
    return await create_thread_with_id(store, new_thread_id(), title)


async def create_thread_with_id(store: EventStore, thread_id: str, title: str) -> tuple[str, str]:
    """Create a thread whose id the caller chose; ThreadExists if it was created before."""
    appended = await store.append(
        Append(
            thread_id=thread_id,
            events=[ev.ThreadCreated(title=title)],
            existence="new",
            dedupe=True,
        )
    )
    return thread_id, appended.ids[0]


async def send_message(
    store: EventStore,
    thread_id: str,
    content: str,
    agent: str,
    *,
    client_id: str | None = None,
    expected_version: int | None = None,
    on_busy: Admit = "queue",
    routed: tuple[ev.RoutedBy, str] | None = None,
    with_run: Callable[[str], list[ev.Event]] | None = None,
) -> Sent:
    """Append the message and the run that answers it, and queue the run's work item.

    `routed` is the router's decision for `agent` (how, and why): it is written
    as `agent.routed` in the same append, between the message and its run.
    `with_run(run_id)` gives more events for that append, after the run's request
    (the router's classification call: its `model.usage` is charged to the run).

    A resend with the same client id within the store's resend window
    (SLIPSTREAM_DEDUPE_WINDOW_S) answers the first send's ids and writes
    nothing; after the window it is a new message.
    """
    # Fresh ids even with a client id: a resend in the window gets the first send's
    # back from its event; one after the window is a new message with ids of its own.
    message_id, reply_id, run_id = new_id("m"), new_id("m"), new_run_id(thread_id)
    events: list[ev.Event] = [
        ev.MessageSent(
            message_id=message_id, content=content, agent=agent, run_id=run_id, client_id=client_id
        )
    ]
    if routed is not None:
        by, reason = routed
        events.append(ev.AgentRouted(message_id=message_id, agents=[agent], by=by, reason=reason))
    events.append(
        ev.RunRequested(run_id=run_id, message_id=message_id, reply_id=reply_id, agent=agent)
    )
    if with_run is not None:
        events.extend(with_run(run_id))
    appended = await store.append(
        Append(
            thread_id=thread_id,
            events=events,
            existence="exists",
            expected_version=expected_version,
            dedupe=True,
            dedupe_key=message_dedupe_key(thread_id, client_id) if client_id else None,
            run_id=run_id,
            run_fields={"status": "queued", "thread": thread_id, "agent": agent},
            work=True,
            admit=on_busy,
            refuse_if_queue_full=True,
        )
    )
    if appended.duplicate:
        # The first send's own event says which ids it gave.
        first = await store.read(thread_id, start=appended.ids[0], count=1)
        if first and isinstance(first[0].event, ev.MessageSent) and first[0].event.run_id:
            message_id, run_id = first[0].event.message_id, first[0].event.run_id
    return Sent(thread_id, message_id, run_id, appended.ids[0], appended.duplicate)


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
