"""The thread view: a pure fold of a thread's events.

`fold(view, events)` never touches its input; `apply` is its one-event step
and changes the view it is given. Both are plain Python over the event
models, so they are tested with lists of events and no Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field, JsonValue

from slipstream import events as ev
from slipstream.codec import Unreadable
from slipstream.store import Stored

MessageStatus = Literal["pending", "streaming", "completed", "cancelled", "failed", "waiting"]
RunStatus = Literal["queued", "running", "retrying", "waiting", "completed", "cancelled", "failed"]
TITLE_CHARS = 80
PROBLEMS_KEPT = 20
# The stored layout of a view (projections/views.py). Bump it when a model here
# changes shape: stored views of another version are rebuilt from their stream.
# 3: the view and its runs carry `usage`; 4: runs carry `approval`, routing,
# tool calls and hand-offs; 5: tool calls carry a person's decision (`denied`, `decided_at`);
# 6: user messages carry their branch (`parent_id`, `edit_of`), runs their model and timings.
SCHEMA_VERSION = 6
# A tool's arguments and result are shown in the chat, not used: a long text in
# them is cut here, so a run's stored view stays small while it streams.
TOOL_TEXT_CHARS = 2000


def stream_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


class RoutedView(BaseModel):
    """The router's decision for a user message (`agent.routed`)."""

    agents: list[str]
    by: str
    reason: str = ""


class MessageView(BaseModel):
    id: str
    role: Literal["user", "assistant"]
    agent: str | None = None
    content: str = ""
    status: MessageStatus
    run_id: str | None = None
    client_id: str | None = None
    created_at: int = Field(description="ms since the epoch, from the stream id")
    attempt: int = 0
    seq: int = Field(0, description="last delta sequence number folded in")
    routed: RoutedView | None = Field(None, description="who the router chose, on a user message")
    parent_id: str | None = Field(
        None,
        description="on a user message: the user message it follows (None: the thread's "
        "first); versions of a message share their parent",
    )
    edit_of: str | None = Field(None, description="on a user message: the message it revises")


StepStatus = Literal["running", "completed", "failed", "retrying", "waiting"]


class StepView(BaseModel):
    """One operation of a workflow run, for the run's timeline."""

    op: int
    name: str
    kind: str
    status: StepStatus
    attempts: int = 0
    started_at: int | None = None
    ended_at: int | None = None
    duration_ms: int | None = None
    error: str | None = None
    result: JsonValue = None
    until_ms: int | None = None


ToolStatus = Literal["running", "completed", "failed"]


class ToolCallView(BaseModel):
    """One tool call of a run, from `tool.called` to its `tool.result`.

    A call waiting for a person's yes is still `running` here: the run's
    `run.waiting` (waiting_for "approval", with the call's id) says it waits.
    """

    call_id: str
    tool: str
    args: JsonValue = None
    status: ToolStatus
    result: JsonValue = None
    turn: int = Field(0, description="hand-offs before the call: which of the run's messages")
    started_at: int | None = None
    ended_at: int | None = None
    denied: bool = Field(False, description="a person said no to it (its result says why)")
    decided_at: int | None = Field(None, description="when a person said yes or no to it")


class HandoffView(BaseModel):
    from_agent: str
    to_agent: str
    reason: str = ""


class UsageTotals(BaseModel):
    """Tokens spent by some model calls, and how many calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    calls: int = 0

    def add(self, event: ev.ModelUsage) -> None:
        self.input_tokens += event.input_tokens
        self.output_tokens += event.output_tokens
        self.cache_read_tokens += event.cache_read_tokens
        self.cache_write_tokens += event.cache_write_tokens
        self.calls += 1


class Usage(BaseModel):
    """A thread's model usage: every `model.usage` once, failed attempts and hand-offs too."""

    total: UsageTotals = Field(default_factory=UsageTotals)
    by_agent: dict[str, UsageTotals] = Field(default_factory=dict)
    by_model: dict[str, UsageTotals] = Field(default_factory=dict)

    def add(self, event: ev.ModelUsage) -> None:
        self.total.add(event)
        self.by_agent.setdefault(event.agent, UsageTotals()).add(event)
        self.by_model.setdefault(event.model, UsageTotals()).add(event)


def tally(events: Iterable[ev.Event | Unreadable], *, agent: str | None = None) -> Usage:
    """The usage of `events` (all of them, or only `agent`'s calls), as the fold counts it."""
    usage = Usage()
    for event in events:
        if isinstance(event, ev.ModelUsage) and (agent is None or event.agent == agent):
            usage.add(event)
    return usage


class ApprovalWait(BaseModel):
    """The tool call a chat run waits on a person's yes for (answer: the `approval` signal)."""

    call_id: str
    tool: str
    args: JsonValue = None
    message_id: str = Field(description="the reply that waits")


class RunView(BaseModel):
    id: str
    status: RunStatus
    agent: str
    message_id: str
    reply_id: str
    attempt: int = 0
    worker: str | None = None
    reason: str | None = None
    waiting_for: str | None = None
    requested_at: int
    started_at: int | None = Field(None, description="when its current attempt started (ms)")
    first_token_at: int | None = Field(
        None, description="when its current attempt wrote its first text (ms)"
    )
    ended_at: int | None = None
    model: str | None = Field(None, description="the model of its latest call")
    until_ms: int | None = Field(None, description="when a waiting run's timer is due")
    approval: ApprovalWait | None = Field(None, description="the call a waiting run asks about")
    steps: list[StepView] = Field(default_factory=list)
    result: JsonValue = None
    usage: UsageTotals = Field(default_factory=UsageTotals)
    tools: list[ToolCallView] = Field(default_factory=list)
    handoffs: list[HandoffView] = Field(default_factory=list)


class Problem(BaseModel):
    id: str
    reason: str


class ThreadSummary(BaseModel):
    id: str
    title: str
    archived: bool = False
    created_at: int
    updated_at: int
    last_event_id: str | None
    messages: int
    active_run: str | None


class RunSummary(BaseModel):
    id: str
    thread_id: str
    agent: str
    status: RunStatus
    attempt: int
    waiting_for: str | None
    until_ms: int | None
    reason: str | None
    requested_at: int
    ended_at: int | None
    steps: int


class ThreadView(BaseModel):
    id: str
    stream_key: str
    title: str = ""
    archived: bool = False
    created_at: int = 0
    updated_at: int = 0
    last_event_id: str | None = None
    version: int = Field(0, description="number of events folded in")
    messages: list[MessageView] = Field(default_factory=list)
    runs: dict[str, RunView] = Field(default_factory=dict)
    problems: list[Problem] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)

    @classmethod
    def empty(cls, thread_id: str, stream_key: str) -> ThreadView:
        return cls(id=thread_id, stream_key=stream_key)

    def message(self, message_id: str) -> MessageView | None:
        for message in reversed(self.messages):
            if message.id == message_id:
                return message
        return None

    def active_run(self, among: Iterable[str] | None = None) -> str | None:
        """The run that has the thread; `among`: the unfinished runs' ids in order, if known."""
        runs = list(self.runs.values()) if among is None else [self.runs[i] for i in among]
        for run in runs:
            if run.status in ("running", "retrying", "waiting"):
                return run.id
        for run in runs:
            if run.status == "queued":
                return run.id
        return None

    def run_summaries(self) -> list[RunSummary]:
        return [self.run_summary(run) for run in self.runs.values()]

    def run_summary(self, run: RunView) -> RunSummary:
        return RunSummary(
            id=run.id,
            thread_id=self.id,
            agent=run.agent,
            status=run.status,
            attempt=run.attempt,
            waiting_for=run.waiting_for,
            until_ms=run.until_ms,
            reason=run.reason,
            requested_at=run.requested_at,
            ended_at=run.ended_at,
            steps=len(run.steps),
        )

    def summary(self, among: Iterable[str] | None = None) -> ThreadSummary:
        return ThreadSummary(
            id=self.id,
            title=self.title,
            archived=self.archived,
            created_at=self.created_at,
            updated_at=self.updated_at,
            last_event_id=self.last_event_id,
            messages=len(self.messages),
            active_run=self.active_run(among),
        )


def fold(view: ThreadView, stored: Iterable[Stored]) -> ThreadView:
    """Return `view` with `stored` applied in order, skipping what it already holds."""
    result = view.model_copy(deep=True)
    for item in stored:
        apply(result, item)
    return result


@dataclass
class Changes:
    """What a fold touched, so a store can rewrite only that: messages by position, runs by id."""

    events: int = 0
    messages: set[int] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)


def fold_into(view: ThreadView, stored: Iterable[Stored]) -> Changes:
    """Apply `stored` to `view` in place and say which messages and runs changed.

    Thread-level fields change with every event, so they are always rewritten.
    A handler reaches a message or run only through the event's own ids (its
    `run_id`, `message_id`, `reply_id`, or the reply of its run), through the
    run's messages (a run's status moves them all: `run_messages`) or by
    appending, so those are what an event marks as changed.
    """
    changes = Changes()
    for item in stored:
        before = view.version
        count = len(view.messages)
        first_token = _first_token_at(view, item)
        apply(view, item)
        if view.version == before:
            continue
        changes.events += 1
        changes.messages.update(range(count, len(view.messages)))
        event = item.event
        if isinstance(event, Unreadable):
            continue
        run_id = getattr(event, "run_id", None)
        if isinstance(event, ev.ModelUsage):
            # Usage changes the thread's totals (meta) and the run's, never a message.
            if run_id in view.runs:
                changes.runs.add(run_id)
            continue
        ids = {getattr(event, "message_id", None), getattr(event, "reply_id", None)}
        if isinstance(event, ev.MessageDelta) and first_token == _first_token_at(view, item):
            # A delta changes its message; its run only with the attempt's first text.
            ids.add(view.runs[event.run_id].reply_id if event.run_id in view.runs else None)
        elif isinstance(run_id, str) and run_id in view.runs:
            changes.runs.add(run_id)
            ids.add(view.runs[run_id].reply_id)
            if isinstance(event, _RUN_STATUS_EVENTS):
                # These move every open message of the run, not only its reply.
                changes.messages.update(run_messages(view, view.runs[run_id]))
        for message_id in ids:
            if isinstance(message_id, str):
                index = message_index(view, message_id)
                if index is not None:
                    changes.messages.add(index)
    return changes


def _first_token_at(view: ThreadView, item: Stored) -> int | None:
    run = view.runs.get(getattr(item.event, "run_id", None) or "")
    return run.first_token_at if run is not None else None


def message_index(view: ThreadView, message_id: str) -> int | None:
    """Where the message is; searched from the end, where the messages that change are."""
    for index in range(len(view.messages) - 1, -1, -1):
        if view.messages[index].id == message_id:
            return index
    return None


def run_messages(view: ThreadView, run: RunView) -> list[int]:
    """Where the run's answers are: its reply and the messages it opened after it
    (an agent handed to, a workflow's later turns), newest first.

    They all come after the reply, so the search stops there.
    """
    found: list[int] = []
    for index in range(len(view.messages) - 1, -1, -1):
        message = view.messages[index]
        if message.run_id == run.id and message.role == "assistant":
            found.append(index)
        if message.id == run.reply_id:
            break
    return found


def apply(view: ThreadView, item: Stored) -> ThreadView:
    if view.last_event_id is not None and _position(item.id) <= _position(view.last_event_id):
        return view  # already folded in: applying twice must change nothing
    view.last_event_id = item.id
    view.version += 1
    view.updated_at = stream_ms(item.id)
    event = item.event
    if isinstance(event, Unreadable):
        view.problems = [*view.problems, Problem(id=item.id, reason=event.reason)][-PROBLEMS_KEPT:]
        return view
    _HANDLERS.get(event.type, _ignore)(view, event, item.id)
    return view


def _position(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _ignore(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    """Events that change nothing in this view (timers, cancel requests)."""


def _thread_created(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.ThreadCreated)
    view.title = event.title
    view.created_at = stream_ms(entry_id)


def _thread_renamed(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.ThreadRenamed)
    view.title = event.title


def _thread_archived(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.ThreadArchived)
    view.archived = event.archived


def _message_sent(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.MessageSent)
    parent = _parent_of(view, event)
    view.messages.append(
        MessageView(
            id=event.message_id,
            role="user",
            agent=event.agent,
            content=event.content,
            status="completed",
            run_id=event.run_id,
            client_id=event.client_id,
            created_at=stream_ms(entry_id),
            parent_id=parent,
            edit_of=event.edit_of,
        )
    )
    if not view.title:
        view.title = " ".join(event.content.split())[:TITLE_CHARS]


def _parent_of(view: ThreadView, event: ev.MessageSent) -> str | None:
    """The user message `event`'s message follows: the revised one's parent for an edit,
    the one named, else the newest user message (a thread without edits is one line).

    Only a user message already folded counts (the API checks; an imported history
    may not): any other id is taken as none, so a branch never hangs from nothing.
    """
    named = view.message(event.edit_of or event.parent_id or "")
    if named is not None and named.role == "user":
        return named.parent_id if event.edit_of else named.id
    for message in reversed(view.messages):
        if message.role == "user":
            return message.id
    return None


def branch_of(view: ThreadView, message_id: str) -> list[str]:
    """The user messages from the thread's first to `message_id`, following parents."""
    by_id = {m.id: m for m in view.messages if m.role == "user"}
    chain: list[str] = []
    seen: set[str] = set()  # parents only point back, but a bad event must not loop
    current: str | None = message_id
    while current is not None and current in by_id and current not in seen:
        chain.append(current)
        seen.add(current)
        current = by_id[current].parent_id
    return chain[::-1]


def branch_messages(view: ThreadView, run_id: str) -> list[MessageView]:
    """The thread's messages on the branch the run answers (its model's conversation,
    with every answer to it): not an edited message's earlier versions, nor what
    followed them. All of them for a run the view does not hold."""
    run = view.runs.get(run_id)
    if run is None:
        return list(view.messages)
    branch = set(branch_of(view, run.message_id))
    kept: list[MessageView] = []
    for message in view.messages:
        answered = view.runs.get(message.run_id or "")
        if message.role == "user":
            on_branch = message.id in branch
        else:
            on_branch = answered is None or answered.message_id in branch
        if on_branch:
            kept.append(message)
    return kept


def _run_requested(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.RunRequested)
    view.runs[event.run_id] = RunView(
        id=event.run_id,
        status="queued",
        agent=event.agent,
        message_id=event.message_id,
        reply_id=event.reply_id,
        requested_at=stream_ms(entry_id),
    )
    view.messages.append(
        MessageView(
            id=event.reply_id,
            role="assistant",
            agent=event.agent,
            status="pending",
            run_id=event.run_id,
            created_at=stream_ms(entry_id),
        )
    )


def _reply(view: ThreadView, run_id: str) -> MessageView | None:
    run = view.runs.get(run_id)
    return view.message(run.reply_id) if run else None


def _run_started(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.RunStarted)
    run = view.runs.get(event.run_id)
    if run is None:
        return
    if event.attempt != run.attempt:
        run.started_at, run.first_token_at = stream_ms(entry_id), None
    run.status, run.attempt, run.worker = "running", event.attempt, event.worker
    run.approval = None
    reply = view.message(run.reply_id)
    if reply is not None and reply.status != "completed" and event.attempt != reply.attempt:
        # A new attempt writes the answer again: show only the current attempt's text.
        # (A workflow's reply written by an earlier attempt stays: it is journaled.)
        reply.content, reply.seq, reply.attempt = "", 0, event.attempt
        reply.status = "streaming"


def _message_of(
    view: ThreadView, run_id: str, message_id: str, agent: str | None, entry_id: str
) -> MessageView | None:
    """The message, or a new one when a workflow's later agent turn opens it."""
    message = view.message(message_id)
    run = view.runs.get(run_id)
    if message is None and run is not None:
        message = MessageView(
            id=message_id,
            role="assistant",
            agent=agent or run.agent,
            status="streaming",
            run_id=run_id,
            created_at=stream_ms(entry_id),
        )
        view.messages.append(message)
    return message


def _delta(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.MessageDelta)
    reply = _message_of(view, event.run_id, event.message_id, event.agent, entry_id)
    if reply is None or event.attempt < reply.attempt:
        return
    if event.attempt > reply.attempt:
        reply.content, reply.seq, reply.attempt = "", 0, event.attempt
    if event.seq != reply.seq + 1:
        return  # a duplicate, or a gap the writer would never leave
    reply.content += event.text
    reply.seq = event.seq
    reply.status = "streaming"
    run = view.runs.get(event.run_id)
    if run is not None and run.first_token_at is None and event.attempt == run.attempt:
        run.first_token_at = stream_ms(entry_id)
    if event.agent:
        reply.agent = event.agent  # who writes it: a workflow's turn may be an agent's


def _message_completed(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.MessageCompleted)
    reply = _message_of(view, event.run_id, event.message_id, event.agent, entry_id)
    if reply is not None:
        reply.content = event.text
        reply.status = "completed"
        if event.agent:
            reply.agent = event.agent
        if event.seq is not None:
            # The deltas between the last one folded and the attempt's last are counted
            # as folded: none when every delta was read, those compacted away when not
            # (projections/compaction.py), so both folds end at the same version.
            view.version += max(0, event.seq - reply.seq)
            reply.seq = event.seq


_Handler = Callable[["ThreadView", ev.Event, str], None]


def _finish(status: RunStatus, message_status: MessageStatus) -> _Handler:
    def handler(view: ThreadView, event: ev.Event, entry_id: str) -> None:
        assert isinstance(event, ev.RunCompleted | ev.RunCancelled | ev.RunFailed)
        run = view.runs.get(event.run_id)
        if run is None:
            return
        run.status = status
        run.ended_at = stream_ms(entry_id)
        run.waiting_for = None
        if isinstance(event, ev.RunCancelled | ev.RunFailed):
            run.reason = event.reason or None
        if isinstance(event, ev.RunCompleted):
            run.result = event.result
        run.until_ms = None
        run.approval = None
        # The reply and any message an agent handed to or a later turn opened: what
        # was not completed ends with the run.
        for index in run_messages(view, run):
            message = view.messages[index]
            if message.status != "completed":
                message.status = message_status

    return handler


def _run_status(
    status: RunStatus, reply_status: MessageStatus | None, *, reply_from: tuple[str, ...] = ()
) -> _Handler:
    """A handler that moves the run to `status` and its open messages to `reply_status`.

    `reply_from` limits the change to messages in those statuses.
    """

    def handler(view: ThreadView, event: ev.Event, entry_id: str) -> None:
        assert isinstance(event, ev.RunRetrying | ev.RunRestarted | ev.RunWaiting | ev.RunResumed)
        run = view.runs.get(event.run_id)
        if run is None:
            return
        run.status = status
        if isinstance(event, ev.RunRetrying):
            run.reason = event.reason
        elif isinstance(event, ev.RunRestarted):
            run.reason, run.ended_at = None, None
        run.waiting_for = event.waiting_for if isinstance(event, ev.RunWaiting) else None
        run.until_ms = event.until_ms if isinstance(event, ev.RunWaiting) else None
        run.approval = _approval_of(event, run)
        if isinstance(event, ev.RunRestarted):
            run.tools, run.handoffs = [], []  # a run from scratch journals its calls again
        if isinstance(event, ev.RunWaiting) and event.op is not None:
            kind = "sleep" if event.waiting_for == "timer" else "wait"
            step = _step(
                run,
                event.op,
                "sleep" if kind == "sleep" else f"wait:{event.waiting_for}",
                kind,
                entry_id,
            )
            step.status, step.until_ms = "waiting", event.until_ms
        if not reply_status:
            return
        # A finished message keeps its status: a workflow may go on after its first
        # answer, a run after a hand-off. The open one may be the agent's handed to.
        for index in run_messages(view, run):
            message = view.messages[index]
            if message.status != "completed" and (not reply_from or message.status in reply_from):
                message.status = reply_status

    return handler


def _approval_of(event: ev.Event, run: RunView) -> ApprovalWait | None:
    if not isinstance(event, ev.RunWaiting) or event.waiting_for != "approval":
        return None
    if event.call_id is None or event.tool is None:
        return None
    return ApprovalWait(
        call_id=event.call_id,
        tool=event.tool,
        args=_bounded(event.args),
        message_id=event.message_id or run.reply_id,
    )


def _step(run: RunView, op: int, name: str, kind: str, entry_id: str) -> StepView:
    for step in run.steps:
        if step.op == op:
            return step
    step = StepView(op=op, name=name, kind=kind, status="running", started_at=stream_ms(entry_id))
    run.steps.append(step)
    return step


def _step_started(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.StepStarted)
    run = view.runs.get(event.run_id)
    if run is None:
        return
    step = _step(run, event.op, event.step, event.kind, entry_id)
    step.status, step.attempts, step.error = "running", event.attempt, None
    step.started_at = stream_ms(entry_id)


def _step_completed(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.StepCompleted)
    run = view.runs.get(event.run_id)
    if run is None or event.step.startswith("@"):
        return  # version and patch markers are bookkeeping, not steps
    step = _step(run, event.op, event.step, event.kind, entry_id)
    step.status, step.result, step.ended_at = "completed", event.result, stream_ms(entry_id)
    step.duration_ms = step.ended_at - step.started_at if step.started_at else 0
    step.until_ms = None


def _step_failed(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.StepFailed)
    run = view.runs.get(event.run_id)
    if run is None:
        return
    step = _step(run, event.op, event.step, "step", entry_id)
    step.status = "failed" if event.final else "retrying"
    step.attempts, step.error, step.ended_at = event.attempt, event.error, stream_ms(entry_id)
    step.duration_ms = step.ended_at - step.started_at if step.started_at else 0


def _model_usage(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.ModelUsage)
    view.usage.add(event)
    run = view.runs.get(event.run_id)
    if run is not None:
        run.usage.add(event)
        run.model = event.model


def _bounded(value: JsonValue) -> JsonValue:
    """`value` with every text in it cut to TOOL_TEXT_CHARS (fold.js cuts the same way)."""
    if isinstance(value, str):
        return value if len(value) <= TOOL_TEXT_CHARS else value[:TOOL_TEXT_CHARS] + "…"
    if isinstance(value, list):
        return [_bounded(item) for item in value]
    if isinstance(value, dict):
        return {key: _bounded(item) for key, item in value.items()}
    return value


def _tool_call(run: RunView, call_id: str, tool: str, entry_id: str) -> ToolCallView:
    """The run's call `call_id`, added (running, in the current turn) when it is new."""
    for call in run.tools:
        if call.call_id == call_id:
            return call
    call = ToolCallView(
        call_id=call_id,
        tool=tool,
        status="running",
        turn=len(run.handoffs),
        started_at=stream_ms(entry_id),
    )
    run.tools.append(call)
    return call


def _tool_called(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.ToolCalled)
    run = view.runs.get(event.run_id)
    if run is not None:
        call = _tool_call(run, event.call_id, event.tool, entry_id)
        call.tool, call.args = event.tool, _bounded(event.args)


def _tool_result(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.ToolResult)
    run = view.runs.get(event.run_id)
    if run is None:
        return
    call = _tool_call(run, event.call_id, "", entry_id)
    call.status = "failed" if event.is_error else "completed"
    call.result, call.ended_at = _bounded(event.result), stream_ms(entry_id)


def _signal_received(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    """A person's yes or no to one of a chat run's tool calls (the `approval` signal).

    A workflow's own signal may be called `approval` too: only a payload naming
    a call of the run, with a yes or no, is a decision on it.
    """
    assert isinstance(event, ev.SignalReceived)
    run = view.runs.get(event.run_id)
    payload = event.payload
    if run is None or event.name != "approval" or not isinstance(payload, dict):
        return
    approved = payload.get("approved")
    if not isinstance(approved, bool):
        return
    for call in run.tools:
        if call.call_id == payload.get("call_id"):
            call.denied, call.decided_at = not approved, stream_ms(entry_id)


def _agent_handoff(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.AgentHandoff)
    run = view.runs.get(event.run_id)
    if run is not None:
        run.handoffs.append(
            HandoffView(from_agent=event.from_agent, to_agent=event.to_agent, reason=event.reason)
        )


def _agent_routed(view: ThreadView, event: ev.Event, entry_id: str) -> None:
    assert isinstance(event, ev.AgentRouted)
    message = view.message(event.message_id)
    if message is not None:
        message.routed = RoutedView(agents=list(event.agents), by=event.by, reason=event.reason)


# The events that move the statuses of a run's messages along with the run's.
_RUN_STATUS_EVENTS = (
    ev.RunCompleted,
    ev.RunCancelled,
    ev.RunFailed,
    ev.RunRetrying,
    ev.RunRestarted,
    ev.RunWaiting,
    ev.RunResumed,
)

_HANDLERS: dict[str, _Handler] = {
    "thread.created": _thread_created,
    "thread.renamed": _thread_renamed,
    "thread.archived": _thread_archived,
    "message.sent": _message_sent,
    "run.requested": _run_requested,
    "run.started": _run_started,
    "message.delta": _delta,
    "message.completed": _message_completed,
    "run.completed": _finish("completed", "completed"),
    "run.cancelled": _finish("cancelled", "cancelled"),
    "run.failed": _finish("failed", "failed"),
    "run.retrying": _run_status("retrying", "pending"),
    "run.restarted": _run_status("queued", "pending"),
    "step.started": _step_started,
    "step.completed": _step_completed,
    "step.failed": _step_failed,
    "run.waiting": _run_status("waiting", "waiting"),
    "run.resumed": _run_status("running", "streaming", reply_from=("waiting",)),
    "model.usage": _model_usage,
    "tool.called": _tool_called,
    "tool.result": _tool_result,
    "signal.received": _signal_received,
    "agent.handoff": _agent_handoff,
    "agent.routed": _agent_routed,
}
