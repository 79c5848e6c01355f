"""The event vocabulary: one versioned, discriminated union of frozen models.

This module is pure: no Redis, no I/O. Stream entries are flat so that
``redis-cli XRANGE`` reads well: ``type``, ``v``, ``eid``, ``run`` and
``agent`` where they apply, and the remaining fields as one JSON ``body``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

SCHEMA_VERSION = 1


def new_event_id() -> str:
    return uuid.uuid4().hex


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(default_factory=new_event_id, description="chosen by the writer")


class _RunEvent(_Event):
    run_id: str


class ThreadCreated(_Event):
    type: Literal["thread.created"] = "thread.created"
    title: str = ""
    owner: str = Field("", description="the user who created it ('' before identity existed)")


class ThreadMemberAdded(_Event):
    """`user` may now use the thread as its owner does (but not manage its members)."""

    type: Literal["thread.member_added"] = "thread.member_added"
    user: str
    by: str = Field(description="who added them: the owner")


class ThreadMemberRemoved(_Event):
    type: Literal["thread.member_removed"] = "thread.member_removed"
    user: str
    by: str = Field(description="who removed them: the owner, or the member who left")


class ThreadRenamed(_Event):
    type: Literal["thread.renamed"] = "thread.renamed"
    title: str


class ThreadArchived(_Event):
    type: Literal["thread.archived"] = "thread.archived"
    archived: bool = True


class MessageSent(_Event):
    """A person's message; `run_id` names the run it requested, if any."""

    type: Literal["message.sent"] = "message.sent"
    message_id: str
    content: str
    agent: str | None = None
    run_id: str | None = None
    client_id: str | None = None
    edit_of: str | None = Field(
        None, description="the user message this one is a new version of (its parent's too)"
    )
    parent_id: str | None = Field(
        None,
        description="the user message this one follows, when not the newest one "
        "(a reply on an earlier branch); unset with edit_of",
    )


class RunRequested(_RunEvent):
    type: Literal["run.requested"] = "run.requested"
    message_id: str = Field(description="the user message the run answers")
    reply_id: str = Field(description="id of the assistant message the run will write")
    agent: str
    traceparent: str | None = Field(
        None,
        description="W3C trace context of the request that asked for the run, when traced: "
        "its attempts and delivery join that trace",
    )


class RunStarted(_RunEvent):
    type: Literal["run.started"] = "run.started"
    attempt: int
    worker: str = Field(description="consumer name host:pid:nonce")
    token: int = Field(description="fencing token of this attempt")


class MessageDelta(_RunEvent):
    type: Literal["message.delta"] = "message.delta"
    message_id: str
    seq: int
    text: str
    attempt: int = 1
    agent: str | None = Field(None, description="set when the delta opens a new message")


class MessageCompleted(_RunEvent):
    type: Literal["message.completed"] = "message.completed"
    message_id: str
    text: str
    agent: str | None = None
    seq: int | None = Field(
        None,
        ge=0,
        description="the sequence number of the attempt's last delta: with it, a fold "
        "reads the message the same once its deltas are compacted away "
        "(projections/compaction.py); unset on answers written whole, and before it existed",
    )


class RunCompleted(_RunEvent):
    type: Literal["run.completed"] = "run.completed"
    result: JsonValue = Field(None, description="a workflow's return value")


class RunCancelRequested(_RunEvent):
    type: Literal["run.cancel_requested"] = "run.cancel_requested"
    reason: str = ""


class RunCancelled(_RunEvent):
    type: Literal["run.cancelled"] = "run.cancelled"
    reason: str = ""


class RunFailed(_RunEvent):
    type: Literal["run.failed"] = "run.failed"
    reason: str


class RunRetrying(_RunEvent):
    type: Literal["run.retrying"] = "run.retrying"
    attempt: int
    delay_ms: int
    reason: str


class RunWaiting(_RunEvent):
    """A run suspended: a workflow for a signal (`waiting_for` its name) or a timer
    ("timer"); a chat run for a person's yes to a tool call ("approval", with the
    call's `call_id`, `tool` and `args`, and the `message_id` of the reply that waits)."""

    type: Literal["run.waiting"] = "run.waiting"
    waiting_for: str
    timeout_ms: int | None = None
    op: int | None = Field(None, description="the workflow operation that waits")
    until_ms: int | None = Field(None, description="when the timer (sleep or timeout) is due")
    call_id: str | None = Field(None, description="an approval wait: the tool call waiting")
    tool: str | None = Field(None, description="an approval wait: the tool it calls")
    args: JsonValue = Field(None, description="an approval wait: the call's arguments")
    message_id: str | None = Field(
        None, description="an approval wait: the reply that waits (after a hand-off, not the first)"
    )


class RunRestarted(_RunEvent):
    """A finished (failed or cancelled) run asked to run again, from scratch."""

    type: Literal["run.restarted"] = "run.restarted"
    reason: str = ""


class RunResumed(_RunEvent):
    type: Literal["run.resumed"] = "run.resumed"
    op: int | None = None
    reason: str = ""


class SignalReceived(_RunEvent):
    type: Literal["signal.received"] = "signal.received"
    name: str
    payload: JsonValue = None


class StepStarted(_RunEvent):
    type: Literal["step.started"] = "step.started"
    step: str
    attempt: int = 1
    op: int = Field(0, description="position of the operation in the workflow")
    kind: str = Field("step", description="step, agent, sleep, wait, or a journaled value")


class StepCompleted(_RunEvent):
    """A journaled result: on replay the workflow gets it back without running the step."""

    type: Literal["step.completed"] = "step.completed"
    step: str
    result: JsonValue = None
    op: int = 0
    kind: str = "step"


class StepFailed(_RunEvent):
    type: Literal["step.failed"] = "step.failed"
    step: str
    error: str
    op: int = 0
    attempt: int = 1
    final: bool = Field(False, description="no attempts left: the error goes to the workflow")


class TimerScheduled(_RunEvent):
    type: Literal["timer.scheduled"] = "timer.scheduled"
    due_ms: int
    purpose: str
    op: int | None = None


class TimerFired(_RunEvent):
    type: Literal["timer.fired"] = "timer.fired"
    due_ms: int
    op: int | None = None


RoutedBy = Literal["pick", "mention", "rule", "classifier", "default"]


class AgentRouted(_Event):
    """Who answers a message, and why; appended with the message it routes.

    Not a run event: it is about the message, and one decision may start
    several runs (one per agent).
    """

    type: Literal["agent.routed"] = "agent.routed"
    message_id: str
    agents: list[str] = Field(min_length=1)
    by: RoutedBy
    reason: str = ""


class AgentHandoff(_RunEvent):
    type: Literal["agent.handoff"] = "agent.handoff"
    from_agent: str
    to_agent: str
    reason: str = ""


class ToolCalled(_RunEvent):
    type: Literal["tool.called"] = "tool.called"
    call_id: str
    tool: str
    args: JsonValue = None


class ToolResult(_RunEvent):
    type: Literal["tool.result"] = "tool.result"
    call_id: str
    result: JsonValue = None
    is_error: bool = False


class ModelUsage(_RunEvent):
    """What one model call cost: every call, retries and hand-offs included."""

    type: Literal["model.usage"] = "model.usage"
    agent: str
    model: str
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cache_read_tokens: int = Field(0, ge=0)
    cache_write_tokens: int = Field(0, ge=0)
    attempt: int = Field(1, ge=1)


class ContextTrimmed(_RunEvent):
    """The thread was longer than the agent's context budget: this attempt's prompt
    left out the oldest `dropped_messages` (tokens are estimated, see consumers/context.py)."""

    type: Literal["context.trimmed"] = "context.trimmed"
    agent: str
    dropped_messages: int = Field(ge=1)
    kept_messages: int = Field(ge=0)
    estimated_tokens: int = Field(ge=0, description="of the prompt sent: system, tools, messages")
    budget: int = Field(ge=1)
    attempt: int = Field(1, ge=1)


Event: TypeAlias = Annotated[
    ThreadCreated
    | ThreadRenamed
    | ThreadArchived
    | ThreadMemberAdded
    | ThreadMemberRemoved
    | MessageSent
    | RunRequested
    | RunStarted
    | MessageDelta
    | MessageCompleted
    | RunCompleted
    | RunCancelRequested
    | RunCancelled
    | RunFailed
    | RunRetrying
    | RunWaiting
    | RunRestarted
    | RunResumed
    | SignalReceived
    | StepStarted
    | StepCompleted
    | StepFailed
    | TimerScheduled
    | TimerFired
    | AgentRouted
    | AgentHandoff
    | ToolCalled
    | ToolResult
    | ModelUsage
    | ContextTrimmed,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

TERMINAL_RUN_EVENTS = frozenset({"run.completed", "run.cancelled", "run.failed"})


def event_types() -> list[str]:
    schema = EVENT_ADAPTER.json_schema()
    return sorted(schema["discriminator"]["mapping"])


def json_schema() -> dict[str, Any]:
    """The schema of every event as it appears in API and websocket frames."""
    schema = EVENT_ADAPTER.json_schema(mode="serialization")
    schema["title"] = "SlipstreamEvent"
    schema["$comment"] = f"schema version {SCHEMA_VERSION}"
    return schema
