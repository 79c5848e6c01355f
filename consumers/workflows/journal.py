"""A workflow run's journal, folded from its events: pure, no Redis.

Every operation of a workflow (a step, an agent turn, a sleep, a wait, a
journaled value) has a position `op`. Replay asks the journal, position by
position, what already happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import JsonValue

from slipstream import events as ev

OpStatus = Literal["started", "completed", "failed", "waiting"]


@dataclass
class Op:
    index: int
    name: str
    kind: str
    status: OpStatus
    attempts: int = 0
    result: JsonValue = None
    error: str | None = None
    final: bool = False  # failed with no attempts left
    until_ms: int | None = None  # a sleep's or a wait's timer
    waiting_for: str | None = None


@dataclass
class Journal:
    ops: dict[int, Op] = field(default_factory=dict)
    signals: dict[str, list[JsonValue]] = field(default_factory=dict)
    workflow_version: int | None = None

    def consumed(self, signal: str) -> int:
        """How many signals of this name completed waits have taken."""
        return sum(
            1
            for op in self.ops.values()
            if op.kind == "wait"
            and op.status == "completed"
            and op.name == f"wait:{signal}"
            and isinstance(op.result, dict)
            and not op.result.get("timed_out")
        )


VERSION_STEP = "@version"


def journal_of(events: Iterable[ev.Event]) -> Journal:
    """Fold one run's events, in stream order, into its journal."""
    journal = Journal()
    for event in events:
        match event:
            case ev.StepStarted(op=op, step=name, kind=kind, attempt=attempt):
                current = journal.ops.get(op)
                if current is None or current.status != "completed":
                    journal.ops[op] = Op(op, name, kind, "started", attempts=attempt)
            case ev.StepCompleted(op=op, step=name, kind=kind, result=result):
                previous = journal.ops.get(op)
                journal.ops[op] = Op(
                    op,
                    name,
                    kind,
                    "completed",
                    attempts=previous.attempts if previous else 0,
                    result=result,
                    waiting_for=previous.waiting_for if previous else None,
                )
                if name == VERSION_STEP and isinstance(result, int):
                    journal.workflow_version = result
            case ev.StepFailed(op=op, step=name, error=error, attempt=attempt, final=final):
                previous = journal.ops.get(op)
                kind = previous.kind if previous else "step"
                journal.ops[op] = Op(
                    op, name, kind, "failed", attempts=attempt, error=error, final=final
                )
            case ev.RunWaiting(op=int(op), waiting_for=waiting_for, until_ms=until_ms):
                kind = "sleep" if waiting_for == "timer" else "wait"
                name = "sleep" if kind == "sleep" else f"wait:{waiting_for}"
                journal.ops[op] = Op(
                    op,
                    name,
                    kind,
                    "waiting",
                    until_ms=until_ms,
                    waiting_for=None if kind == "sleep" else waiting_for,
                )
            case ev.SignalReceived(name=name, payload=payload):
                journal.signals.setdefault(name, []).append(payload)
            case ev.RunRestarted():
                # Retried from its failed step: what completed stays, what failed runs again.
                for failed in [o for o in journal.ops.values() if o.status == "failed"]:
                    del journal.ops[failed.index]
            case _:
                pass
    return journal
