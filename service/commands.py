"""What users ask for, turned into guarded appends."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import orjson
from pydantic import JsonValue, ValidationError

from consumers import workflows
from consumers.approval import APPROVAL_SIGNAL, ApprovalPayload
from projections.views import ViewStore
from slipstream import errors, metrics, tracing
from slipstream import events as ev
from slipstream.keys import new_id, new_run_id, thread_of_run
from slipstream.store import Append, EventStore
from slipstream.threads import (
    Sent,
    change_members,
    create_thread,
    create_thread_with_id,
    earlier_send,
    send_message,
    update_thread,
)

_SIGNALS = uuid.UUID("0f6f0a52-3b5e-4e8e-8d0b-6c1f5b8e2a41")
_COMMANDS = uuid.UUID("8d3c6a1e-2f47-4b0e-9c55-7e1a0b9d4f26")
TERMINAL = ("completed", "cancelled", "failed")
# Runs no worker holds: a cancel can end them on the spot.
UNHELD = ("queued", "retrying", "waiting")
RESTARTED: Mapping[str, str] = {
    "status": "queued",
    "cancel": "0",
    "failures": "0",
    "owner": "",
    "lease_until": "0",
}
"""A finished run's hash as a restart leaves it: queued afresh, unheld, no failures."""

Reply = dict[str, str]


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


def _command_key(run_id: str, command: str, client_id: str | None) -> str | None:
    """The dedupe key of a command sent with a client id: its resends share it."""
    if not client_id:
        return None
    if command == "signal":  # as signal_id always named it, so older resends still match
        return uuid.uuid5(_SIGNALS, f"{run_id}\n{client_id}").hex
    return uuid.uuid5(_COMMANDS, f"{run_id}\n{command}\n{client_id}").hex


def _encode(reply: Reply) -> str:
    return orjson.dumps(reply).decode()


class _Once:
    """A command sent with a client id answers its resends what it answered first.

    The first answer is kept with the command's dedupe key, written in the
    same append as its events, for the resend window; a resend finds it and
    writes nothing, even once the run has moved on (a resent cancel of a run
    that has since stopped still answers what the first cancel did).
    """

    def __init__(self, store: EventStore, thread_id: str, key: str | None) -> None:
        self.store = store
        self.thread_id = thread_id
        self.key = key

    async def first(self) -> Reply | None:
        if self.key is None:
            return None
        stored = await self.store.recall(self.thread_id, self.key)
        if not stored:
            return None
        reply: Reply = orjson.loads(stored)
        return reply

    async def append(self, request: Append, reply: Reply) -> Reply:
        """`request` with this command's dedupe key and reply; a twin's reply if it came first.

        Without a client id the key is the batch's first event id: a resend of
        this very call (redis-py sends a call again when its connection drops,
        even once it was applied) has the same ids, so it writes nothing twice.
        """
        appended = await self.store.append(
            dataclasses.replace(request, dedupe=True, dedupe_key=self.key, reply=_encode(reply))
        )
        if appended.duplicate and appended.reply:
            earlier: Reply = orjson.loads(appended.reply)
            return earlier
        return reply

    async def without_events(self, reply: Reply) -> Reply:
        """An answer that wrote nothing is kept too, so its resends get it back."""
        if self.key is None:
            return reply
        kept: Reply = orjson.loads(
            await self.store.remember(self.thread_id, self.key, _encode(reply))
        )
        return kept

    async def decide(self, body: Callable[[], Awaitable[Reply]]) -> Reply:
        """The first answer if this is a resend; else `body`'s, whose refusal stands
        unless a twin of this call was accepted meanwhile."""
        reply = await self.first()
        if reply is not None:
            return reply
        try:
            return await body()
        except errors.SlipstreamError:
            reply = await self.first()
            if reply is None:
                raise
            return reply


async def cancel_run(
    store: EventStore, run_id: str, reason: str = "", client_id: str | None = None
) -> CancelOutcome:
    """Stop a run from any client: at once if no worker holds it, else via its worker."""
    thread_id = _run_thread(run_id)
    once = _Once(store, thread_id, _command_key(run_id, "cancel", client_id))
    reply = await once.decide(lambda: _cancel(store, once, thread_id, run_id, reason))
    return CancelOutcome(run_id, reply["status"], reply["was"])


async def _cancel(
    store: EventStore, once: _Once, thread_id: str, run_id: str, reason: str
) -> Reply:
    for _ in range(3):
        state = await store.run_state(run_id, thread_id)
        status = state.get("status")
        if status is None:
            raise errors.RunNotFound(run_id)
        if status in TERMINAL:
            raise errors.RunFinished(run_id, status)
        # Only a worker acts on the flag: a run no worker holds (say one an interrupt
        # flagged while it waited) is cancelled here whatever the flag says.
        if state.get("cancel") == "1" and status == "running":
            return await once.without_events({"status": "cancel_requested", "was": status})
        requested = ev.RunCancelRequested(run_id=run_id, reason=reason)
        try:
            if status in UNHELD:
                ended: Reply = {"status": "cancelled", "was": status}
                decided = await once.append(
                    Append(
                        thread_id=thread_id,
                        events=[
                            requested,
                            ev.RunCancelled(run_id=run_id, reason=reason or "cancelled"),
                        ],
                        run_id=run_id,
                        expect_status=UNHELD,
                        run_fields={"cancel": "1", "status": "cancelled"},
                    ),
                    ended,
                )
                if decided is ended:  # ended by this call, not by a twin that came first
                    # No worker holds it, so none counts its end: this process does.
                    since = metrics.stream_id_ms(state.get("since", ""))
                    metrics.run_ended(state.get("agent", ""), "cancelled", since)
                return decided
            return await once.append(
                Append(
                    thread_id=thread_id,
                    events=[requested],
                    run_id=run_id,
                    # Still held: if it parked or ended meanwhile, decide again.
                    expect_status=("running",),
                    run_fields={"cancel": "1"},
                    announce_cancel=True,
                ),
                {"status": "cancel_requested", "was": status},
            )
        except errors.RunStatusChanged:
            continue  # a worker took it meanwhile: decide again
    raise errors.RunStatusChanged(run_id, "changing too fast to cancel; try again")


async def regenerate(
    store: EventStore, views: ViewStore, run_id: str, client_id: str | None = None
) -> tuple[str, str]:
    """A new answer to the message a finished run answered; returns (run id, reply id)."""
    thread_id = _run_thread(run_id)
    once = _Once(store, thread_id, _command_key(run_id, "regenerate", client_id))
    reply = await once.decide(lambda: _regenerate(store, views, once, thread_id, run_id))
    return reply["run_id"], reply["message_id"]


async def _regenerate(
    store: EventStore, views: ViewStore, once: _Once, thread_id: str, run_id: str
) -> Reply:
    run = (await views.current(thread_id)).runs.get(run_id)
    if run is None:
        raise errors.RunNotFound(run_id)
    if run.status not in TERMINAL:
        raise errors.RunStatusChanged(run_id, f"{run.status}; regenerate once it has finished")
    # Fresh ids even with a client id: a twin that comes second is answered the
    # first one's (the dedupe key decides), one after the resend window is new.
    new_run, reply_id = new_run_id(thread_id), new_id("m")
    traceparent = tracing.current_traceparent()  # the request's: the new run joins it
    return await once.append(
        Append(
            thread_id=thread_id,
            events=[
                ev.RunRequested(
                    run_id=new_run,
                    message_id=run.message_id,
                    reply_id=reply_id,
                    agent=run.agent,
                    traceparent=traceparent,
                )
            ],
            run_id=new_run,
            run_fields=tracing.with_trace(
                {"status": "queued", "thread": thread_id, "agent": run.agent}, traceparent
            ),
            work=True,
            refuse_if_queue_full=True,
        ),
        {"run_id": new_run, "message_id": reply_id},
    )


async def restart_run(
    store: EventStore, run_id: str, reason: str = "", client_id: str | None = None
) -> str:
    """Run a failed or cancelled run again from scratch; it queues behind the thread's run.

    Returns the run's status before the restart.
    """
    thread_id = _run_thread(run_id)
    once = _Once(store, thread_id, _command_key(run_id, "retry", client_id))
    reply = await once.decide(lambda: _restart(store, once, thread_id, run_id, reason))
    return reply["was"]


async def _restart(
    store: EventStore, once: _Once, thread_id: str, run_id: str, reason: str
) -> Reply:
    state = await store.run_state(run_id, thread_id)
    status = state.get("status")
    if status is None:
        raise errors.RunNotFound(run_id)
    if status not in ("failed", "cancelled"):
        raise errors.RunStatusChanged(run_id, f"{status}; only failed or cancelled runs restart")
    return await once.append(
        Append(
            thread_id=thread_id,
            events=[ev.RunRestarted(run_id=run_id, reason=reason)],
            run_id=run_id,
            expect_status=("failed", "cancelled"),
            run_fields=RESTARTED,
            work=True,
            refuse_if_queue_full=True,
        ),
        {"was": status},
    )


async def signal_run(
    store: EventStore,
    run_id: str,
    name: str,
    payload: JsonValue,
    signal_id: str | None = None,
) -> str:
    """Deliver a signal (human input) to a run; it resumes if it waits for it.

    A chat run takes only `approval`, for the tool call it waits on (`_approve`).

    A signal the workflow declares is kept even before the workflow waits for
    it. Returns the run's status when the signal arrived. With the sender's
    own id (`signal_id`, the API's client id) a resend answers the same and is
    not kept a second time, so it cannot answer the next wait.
    """
    thread_id = _run_thread(run_id)
    once = _Once(store, thread_id, _command_key(run_id, "signal", signal_id))
    reply = await once.decide(lambda: _signal(store, once, thread_id, run_id, name, payload))
    return reply["was"]


async def _signal(
    store: EventStore,
    once: _Once,
    thread_id: str,
    run_id: str,
    name: str,
    payload: JsonValue,
) -> Reply:
    state = await store.run_state(run_id, thread_id)
    status = state.get("status")
    if status is None:
        raise errors.RunNotFound(run_id)
    if status in TERMINAL:
        raise errors.RunFinished(run_id, status)
    definition = workflows.get(state.get("agent", ""))
    if definition is None:
        return await _approve(store, once, thread_id, run_id, state, name, payload)
    if name not in definition.signals:
        accepted = ", ".join(sorted(definition.signals)) or "none"
        raise errors.SignalRefused(
            run_id,
            f"workflow {definition.name!r} does not wait for {name!r} (it takes: {accepted})",
        )
    return await once.append(
        Append(
            thread_id=thread_id,
            events=[ev.SignalReceived(run_id=run_id, name=name, payload=payload)],
            run_id=run_id,
            refuse_if_finished=True,
            wake_if_waiting_for=name,
        ),
        {"was": status},
    )


async def _approve(
    store: EventStore,
    once: _Once,
    thread_id: str,
    run_id: str,
    state: dict[str, str],
    name: str,
    payload: JsonValue,
) -> Reply:
    """A chat run takes one signal, `approval`, and only for the call it waits on.

    Unlike a workflow's signals it is not kept for later: an answer while the run
    waits for no approval, or to another call than the one it waits on (already
    answered, not asked yet), is refused with 409 and nothing is written, so it
    can never answer a later call. A bad payload to a waiting run is a 422.
    """
    if name != APPROVAL_SIGNAL:
        raise errors.SignalRefused(
            run_id, f"a chat run takes only the {APPROVAL_SIGNAL!r} signal, not {name!r}"
        )
    status, waiting_call = state.get("status"), state.get("approval_call", "")
    if status != "waiting" or state.get("waiting_for") != APPROVAL_SIGNAL:
        raise errors.SignalUnawaited(run_id, f"it is {status}, not waiting for an approval")
    try:
        answer = ApprovalPayload.model_validate(payload)
    except ValidationError as exc:
        raise errors.SignalInvalid(run_id, _problems(exc)) from None
    if waiting_call != answer.call_id:
        raise errors.SignalUnawaited(
            run_id,
            f"it waits for approval of call {waiting_call!r}, not {answer.call_id!r}",
        )
    try:
        return await once.append(
            Append(
                thread_id=thread_id,
                events=[
                    ev.SignalReceived(
                        run_id=run_id, name=name, payload=answer.model_dump(exclude_none=True)
                    )
                ],
                run_id=run_id,
                expect_status=("waiting",),  # woken (answered) or cancelled meanwhile: refused
                wake_if_waiting_for=name,
            ),
            {"was": "waiting"},
        )
    except errors.RunStatusChanged as exc:
        raise errors.SignalUnawaited(
            run_id, f"it is {exc.status} now, no longer waiting for approval"
        ) from None


def _problems(exc: ValidationError) -> str:
    """What is wrong with the payload, field by field, as the API's 422s say it."""
    problems = []
    for err in exc.errors(include_url=False):
        where = "".join(f".{p}" for p in err["loc"])
        problems.append(f"payload{where}: {err['msg']}")
    return "; ".join(problems)


__all__ = [
    "CancelOutcome",
    "Sent",
    "cancel_run",
    "change_members",
    "create_thread",
    "create_thread_with_id",
    "earlier_send",
    "regenerate",
    "restart_run",
    "send_message",
    "signal_run",
    "update_thread",
]
