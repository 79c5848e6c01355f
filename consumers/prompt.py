"""Builds the model prompt for a run from the thread view."""

from __future__ import annotations

from consumers.agents import AGENTS, DEFAULT_AGENT
from consumers.llm.base import ChatMessage, Prompt
from projections.thread_view import ThreadView


def prompt_for(view: ThreadView, run_id: str) -> Prompt:
    """The conversation up to the message the run answers.

    Earlier answers count with the text they reached, even when cancelled;
    answers still pending or failed add nothing. Consecutive messages of one
    role are merged, since the Messages API wants the roles to alternate.
    """
    run = view.runs[run_id]
    agent = AGENTS.get(run.agent) or AGENTS[DEFAULT_AGENT]
    turns: list[ChatMessage] = []
    for message in view.messages:
        if message.id == run.reply_id:
            break
        if not message.content or message.status in ("pending", "failed"):
            continue
        if turns and turns[-1].role == message.role:
            turns[-1] = ChatMessage(message.role, turns[-1].content + "\n\n" + message.content)
        else:
            turns.append(ChatMessage(message.role, message.content))
    while turns and turns[0].role != "user":
        turns.pop(0)
    asked = view.message(run.message_id)
    return Prompt(
        system=agent.system, messages=tuple(turns), question=asked.content if asked else ""
    )
