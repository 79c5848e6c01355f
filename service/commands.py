"""What users ask for, turned into guarded appends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pydantic import JsonValue

from consumers import workflows
from projections.views import ViewStore
from slipstream import errors
from slipstream import events as ev
from slipstream.keys import new_id, new_run_id, thread_of_run
from slipstream.store import Append, EventStore
from slipstream.threads import (
    Sent,
    create_thread,
    create_thread_with_id,
    send_message,
    update_thread,
)

_SIGNALS = uuid.UUID("0f6f0a52-3b5e-4e8e-8d0b-6c1f5b8e2a41")
TERMINAL = ("completed", "cancelled", "failed")
# Runs no worker holds: a cancel can end them on the spot.
UNHELD = ("queued", "retrying", "waiting")


@dataclass(frozen=True)
class CancelOutcome:
    run_id: str
    status: str  # "cancelled" when it ended now, "cancel_requested" when its worker will stop it
    was: str


def _run_thread(run_id: str) -> str:
    thread_id = thread_of_run(run_id)
    if thread_id is None:
        raise errors.RunNotFound(run_id)
    return thread_id


async def cancel_run(store: EventStore, run_id: str, reason: str = "") -> CancelOutcome:
    """Stop a run from any client: at once if no worker holds it, else via its worker."""
    thread_id = _run_thread(run_id)
    for _ in range(3):
        state = await store.run_state(run_id, thread_id)
        status = state.get("status")
        if status is None:
            raise errors.RunNotFound(run_id)
        if status in TERMINAL:
            raise errors.RunFinished(run_id, status)
        if state.get("cancel") == "1":
            return CancelOutcome(run_id, "cancel_requested", status)
        try:
            if status in UNHELD:
                await store.append(
                    Append(
                        thread_id=thread_id,
                        events=[
                            ev.RunCancelRequested(run_id=run_id, reason=reason),
                            ev.RunCancelled(run_id=run_id, reason=reason or "cancelled"),
                        ],
                        run_id=run_id,
                        expect_status=UNHELD,
                        run_fields={"cancel": "1", "status": "cancelled"},
                    )
                )
                return CancelOutcome(run_id, "cancelled", status)
            await store.append(
                Append(
                    thread_id=thread_id,
                    events=[ev.RunCancelRequested(run_id=run_id, reason=reason)],
                    run_id=run_id,
                    # Still held: if it parked or ended meanwhile, decide again.
                    expect_status=("running",),
                    run_fields={"cancel": "1"},
                    announce_cancel=True,
                )
            )
            return CancelOutcome(run_id, "cancel_requested", status)
        except errors.RunStatusChanged:
            continue  # a worker took it meanwhile: decide again
    raise errors.RunStatusChanged(run_id, "changing too fast to cancel; try again")


async def regenerate(store: EventStore, views: ViewStore, run_id: str) -> tuple[str, str]:
    """A new answer to the message a finished run answered; returns (run id, reply id)."""
    thread_id = _run_thread(run_id)
    run = (await views.current(thread_id)).runs.get(run_id)
    if run is None:
        raise errors.RunNotFound(run_id)
    if run.status not in TERMINAL:
        raise errors.RunStatusChanged(run_id, f"{run.status}; regenerate once it has finished")
    new_run, reply_id = new_run_id(thread_id), new_id("m")
    await store.append(
        Append(
            thread_id=thread_id,
            events=[
                ev.RunRequested(
                    run_id=new_run, message_id=run.message_id, reply_id=reply_id, agent=run.agent
                )
            ],
            run_id=new_run,
            run_fields={"status": "queued", "thread": thread_id, "agent": run.agent},
            work=True,
        )
    )
    return new_run, reply_id


async def restart_run(store: EventStore, run_id: str, reason: str = "") -> str:
    """Run a failed or cancelled run again from scratch; it queues behind the thread's run."""
    thread_id = _run_thread(run_id)
    state = await store.run_state(run_id, thread_id)
    status = state.get("status")
    if status is None:
        raise errors.RunNotFound(run_id)
    if status not in ("failed", "cancelled"):
        raise errors.RunStatusChanged(run_id, f"{status}; only failed or cancelled runs restart")
    await store.append(
        Append(
            thread_id=thread_id,
            events=[ev.RunRestarted(run_id=run_id, reason=reason)],
            run_id=run_id,
            expect_status=("failed", "cancelled"),
            run_fields={
                "status": "queued",
                "cancel": "0",
                "failures": "0",
                "owner": "",
                "lease_until": "0",
            },
            work=True,
        )
    )
    return status


async def signal_run(
    store: EventStore, run_id: str, name: str, payload: JsonValue, signal_id: str | None = None
) -> str:
    """Deliver a signal (human input) to a workflow run; it resumes if it waits for it.

    A signal the workflow declares is kept even before the workflow waits for
    it. Returns the run's status when the signal arrived.
    """
    thread_id = _run_thread(run_id)
    state = await store.run_state(run_id, thread_id)
    status = state.get("status")
    if status is None:
        raise errors.RunNotFound(run_id)
    if status in TERMINAL:
        raise errors.RunFinished(run_id, status)
    definition = workflows.get(state.get("agent", ""))
    if definition is None:
        raise errors.SignalRefused(run_id, f"its agent {state.get('agent')!r} is not a workflow")
    if name not in definition.signals:
        accepted = ", ".join(sorted(definition.signals)) or "none"
        raise errors.SignalRefused(
            run_id,
            f"workflow {definition.name!r} does not wait for {name!r} (it takes: {accepted})",
        )
    # With the sender's own id a resent signal is a no-op, not an answer to the next wait.
    event_id = uuid.uuid5(_SIGNALS, f"{run_id}\n{signal_id}").hex if signal_id else None
    await store.append(
        Append(
            thread_id=thread_id,
            events=[
                ev.SignalReceived(run_id=run_id, name=name, payload=payload, event_id=event_id)
                if event_id
                else ev.SignalReceived(run_id=run_id, name=name, payload=payload)
            ],
            run_id=run_id,
            refuse_if_finished=True,
            wake_if_waiting_for=name,
            dedupe_ms=0 if signal_id else None,
        )
    )
    return status


__all__ = [
    "CancelOutcome",
    "Sent",
    "cancel_run",
    "create_thread",
    "create_thread_with_id",
    "regenerate",
    "restart_run",
    "send_message",
    "signal_run",
    "update_thread",
]
