"""Approval waits: a tool call that needs a person's yes parks its chat run until the
`approval` signal answers it.

The agent loop journals the call (`tool.called`) and raises `AwaitingApproval`; the
runner parks the run as a workflow wait is parked (`run.waiting` with
`waiting_for: "approval"` and the call, the lease and work item given up, the run
woken by the signal). The signal (`POST /api/runs/{id}/signal`, name `approval`,
payload `ApprovalPayload`) is journaled as `signal.received`; the next attempt
replays the journal, finds the decision for the call and runs the tool, or gives
the model an error result saying it was denied and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumers.llm.parts import ToolCallPart
from consumers.tools import CallResult
from consumers.tools.execute import error_result
from slipstream import events as ev

APPROVAL_SIGNAL = "approval"  # the signal's name and the run's `waiting_for` (DESIGN.md)


class ApprovalPayload(BaseModel):
    """The answer to one waiting call. Strict: `"true"` is not a yes."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    call_id: str = Field(min_length=1, max_length=200, description="the call waiting")
    approved: bool
    reason: str | None = Field(None, max_length=2000, description="why; a no's goes to the model")


class AwaitingApproval(Exception):
    """The call needs a person's yes and has none yet: the run parks for it.

    `usage` holds the events still to be written with the park (the usage of the
    model call that asked, when the loop had not written it yet).
    """

    def __init__(self, call: ToolCallPart) -> None:
        super().__init__(f"tool call {call.call_id} ({call.name}) waits for approval")
        self.call = call
        self.usage: list[ev.Event] = []


@dataclass(frozen=True)
class Approvals:
    """The approval signals a run received: the first answer per call, and how many."""

    decisions: dict[str, ApprovalPayload]
    received: int  # every `approval` signal journaled, answered or not (the park counts them)

    @classmethod
    def of(cls, events: Iterable[ev.Event]) -> Approvals:
        decisions: dict[str, ApprovalPayload] = {}
        received = 0
        for event in events:
            if not isinstance(event, ev.SignalReceived) or event.name != APPROVAL_SIGNAL:
                continue
            received += 1
            try:
                payload = ApprovalPayload.model_validate(event.payload)
            except ValidationError:
                continue  # validated when sent; one that is not answers nothing
            decisions.setdefault(payload.call_id, payload)
        return cls(decisions, received)


NO_APPROVALS = Approvals({}, 0)


def denied(tool: str, reason: str | None) -> CallResult:
    """What the model gets back for a call a person said no to."""
    why = f": {reason}" if reason else " (no reason given)"
    return error_result(f"a person denied the call to {tool}{why}. Do not call it again unasked.")


def waiting_event(run_id: str, message_id: str, call: ToolCallPart) -> ev.RunWaiting:
    return ev.RunWaiting(
        run_id=run_id,
        waiting_for=APPROVAL_SIGNAL,
        call_id=call.call_id,
        tool=call.name,
        args=call.args,
        message_id=message_id,
    )
