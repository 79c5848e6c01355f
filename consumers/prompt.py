"""Builds the model prompt for a run from the thread view."""

from __future__ import annotations

from consumers.agents import Agent, agent_named
from consumers.llm.base import ChatMessage, Prompt, ToolSpec
from consumers.tools import REGISTRY, ToolRegistry
from projections.thread_view import ThreadView


def tool_specs(agent: Agent, registry: ToolRegistry = REGISTRY) -> tuple[ToolSpec, ...]:
    """The agent's tools as the model sees them, in the agents file's order.

    A tool the registry does not hold (an `mcp.<server>` entry: MCP is not wired
    in yet) is left out, so the model is never offered what cannot run.
    """
    specs = []
    for name in agent.tools:
        tool = registry.get(name)
        if tool is not None:
            specs.append(ToolSpec(tool.name, tool.description, dict(tool.input_schema)))
    return tuple(specs)


def prompt_for(view: ThreadView, run_id: str, registry: ToolRegistry = REGISTRY) -> Prompt:
    """The conversation up to and including the message the run answers.

    Earlier answers count with the text they reached, even when cancelled;
    answers still pending, still being written (another agent's, answering at
    the same time) or failed add nothing, and so do earlier answers to
    the same message (a regenerated answer starts afresh). Consecutive
    messages of one role are merged: the Messages API wants roles to alternate.
    The agent's tools go with it; the tool turns of this answer are added by the
    agent loop (`consumers.agent_loop`), which holds them.
    """
    run = view.runs[run_id]
    agent = agent_named(run.agent)
    turns: list[ChatMessage] = []
    for message in view.messages:
        if message.id == run.reply_id:
            break
        if not message.content or message.status in ("pending", "streaming", "failed"):
            continue
        if message.role == "assistant" and _answers(view, message.run_id, run.message_id):
            continue
        if turns and turns[-1].role == message.role:
            turns[-1] = ChatMessage(message.role, turns[-1].text + "\n\n" + message.content)
        else:
            turns.append(ChatMessage(message.role, message.content))
    while turns and turns[0].role != "user":
        turns.pop(0)
    asked = view.message(run.message_id)
    return Prompt(
        system=agent.system,
        messages=tuple(turns),
        question=asked.content if asked else "",
        tools=tool_specs(agent, registry),
    )


def _answers(view: ThreadView, run_id: str | None, message_id: str) -> bool:
    other = view.runs.get(run_id or "")
    return other is not None and other.message_id == message_id
