"""Agent hand-offs: the `handoff` tool an agent with `handoffs` is offered, and the
hand-offs a run journaled, rebuilt as conversation turns for a new attempt.

The tool is not in the registry: the agent loop (`consumers.agent_loop`) handles
its calls. A hand-off is journaled in one append with the message of the agent
handing off: its `message.completed`, the call's `tool.called` and `tool.result`,
and `agent.handoff`; the agent handed to answers in a message of its own, whose id
is derived from the run and the hand-off's position, so every attempt writes the
same one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from pydantic import JsonValue

from consumers.agents import Agent
from consumers.llm.base import ChatMessage, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock
from consumers.llm.parts import ToolCallPart
from consumers.tools import CallResult
from consumers.tools.execute import error_result
from slipstream import events as ev
from slipstream.keys import derived_hex

HANDOFF_TOOL = "handoff"  # the name the scripted model calls (DESIGN.md)


class HandoffsExceeded(Exception):
    """The agents kept handing the run on past the bound: the run fails with this reason."""


def handoff_spec(agent: Agent) -> tuple[ToolSpec, ...]:
    """The `handoff` tool as `agent` is offered it: none for an agent without hand-offs."""
    if not agent.handoffs:
        return ()
    schema: dict[str, JsonValue] = {
        "type": "object",
        "properties": {
            "agent": {
                "type": "string",
                "enum": list(agent.handoffs),
                "description": "the agent to hand the conversation to",
            },
            "reason": {"type": "string", "description": "why, in one short sentence"},
        },
        "required": ["agent"],
        "additionalProperties": False,
    }
    return (
        ToolSpec(
            HANDOFF_TOOL,
            "Hand the conversation to another agent, who answers next with the whole "
            f"history. You may hand off to: {', '.join(agent.handoffs)}.",
            schema,
        ),
    )


def handoff_message_id(run_id: str, position: int) -> str:
    """The message of the agent the run's `position`-th hand-off (from 1) went to."""
    return "m" + derived_hex("handoff", run_id, str(position))


@dataclasses.dataclass(frozen=True)
class Target:
    agent: str
    reason: str


def target_of(agent: Agent, call: ToolCallPart) -> Target | CallResult:
    """Where the call hands the run to, or the error result the model gets back."""
    to, reason = call.args.get("agent"), call.args.get("reason", "")
    if not isinstance(reason, str):
        return error_result("handoff: reason must be a string")
    if not isinstance(to, str) or to not in agent.handoffs:
        named = f"{to!r} is not" if isinstance(to, str) else "agent must name"
        return error_result(
            f"handoff: {named} one of the agents {agent.name} may hand off to "
            f"({', '.join(agent.handoffs)})"
        )
    return Target(to, reason)


def handed_to(target: str) -> CallResult:
    return CallResult(result=f"handed off to {target}")


@dataclasses.dataclass(frozen=True)
class JournaledHandoff:
    """One hand-off an earlier attempt made, with the turn of the agent that made it."""

    event: ev.AgentHandoff
    text: str  # what the agent handing off wrote
    calls: tuple[tuple[ev.ToolCalled, ev.ToolResult], ...]  # its calls, the handoff last

    def turns(self) -> list[ChatMessage]:
        """The agent's turn as the conversation holds it: its text and calls, then results.

        Rounds of one message are folded into one turn: what the model sees of
        them is its calls and their results, which is what the next agent needs.
        """
        uses = tuple(
            ToolUseBlock(c.call_id, c.tool, c.args if isinstance(c.args, dict) else {})
            for c, _ in self.calls
        )
        return [
            ChatMessage("assistant", (*([TextBlock(self.text)] if self.text else []), *uses)),
            ChatMessage(
                "user",
                tuple(ToolResultBlock(r.call_id, r.result, r.is_error) for _, r in self.calls),
            ),
        ]


def journaled_handoffs(events: Iterable[ev.Event]) -> tuple[JournaledHandoff, ...]:
    """The run's hand-offs in order, from its events in stream order."""
    handoffs: list[JournaledHandoff] = []
    called: dict[str, ev.ToolCalled] = {}
    results: dict[str, ev.ToolResult] = {}
    text = ""
    for event in events:
        if isinstance(event, ev.ToolCalled):
            called.setdefault(event.call_id, event)
        elif isinstance(event, ev.ToolResult):
            results[event.call_id] = event
        elif isinstance(event, ev.MessageCompleted):
            text = event.text
        elif isinstance(event, ev.AgentHandoff):
            # A call journaled with no result was not part of the turn that handed off.
            calls = tuple((c, results[i]) for i, c in called.items() if i in results)
            handoffs.append(JournaledHandoff(event, text, calls))
            called, results, text = {}, {}, ""
    return tuple(handoffs)
