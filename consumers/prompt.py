"""Builds the model prompt for a run from the thread view."""

from __future__ import annotations

from dataclasses import dataclass

from consumers.agents import Agent, agent_named
from consumers.answer import Attempt
from consumers.context import Trimmed, fixed_tokens, repaired, trimmed
from consumers.handoff import handoff_spec
from consumers.llm.base import ChatMessage, Prompt, ToolSpec
from consumers.tools import REGISTRY, ToolRegistry
from projections.thread_view import MessageView, RunView, ThreadView, branch_of
from slipstream import events as ev


def tool_specs(agent: Agent, registry: ToolRegistry = REGISTRY) -> tuple[ToolSpec, ...]:
    """The agent's tools as the model sees them, in the agents file's order.

    A tool the registry does not hold (an `mcp.<server>` entry whose server was
    unreachable at start, so its tools are unknown) is left out, so the model is
    never offered what cannot run. A reachable server's entry was replaced by its
    tools at start (consumers/tools/mcp_servers.py).
    """
    specs = []
    for name in agent.tools:
        tool = registry.get(name)
        if tool is not None:
            specs.append(ToolSpec(tool.name, tool.description, dict(tool.input_schema)))
    return tuple(specs)


@dataclass(frozen=True)
class Context:
    """A run's prompt, and the cut made to fit it in the agent's budget (None: no cut)."""

    prompt: Prompt
    cut: Trimmed | None


SHARED_THREAD_NOTE = (
    "This conversation is shared by several agents. A reply another agent wrote "
    "starts with its name in brackets, like [writer]; replies without a name are "
    "yours. Do not put a name in front of your own reply."
)


def label(agent: str) -> str:
    """What starts a reply written by another agent than the one answering."""
    return f"[{agent}] "


def prompt_for(view: ThreadView, run_id: str, registry: ToolRegistry = REGISTRY) -> Prompt:
    """The run's prompt with the whole history (no token budget)."""
    return context_for(view, run_id, None, registry).prompt


def context_for(
    view: ThreadView, run_id: str, budget: int | None, registry: ToolRegistry = REGISTRY
) -> Context:
    """The conversation up to and including the message the run answers.

    Only the run's branch counts: the user messages from the thread's first to
    the one answered, following parents (an edited message's earlier versions
    and what followed them are left out), with their answers. Earlier answers
    count with the text they reached, even when cancelled; answers still
    pending, still being written (another agent's, answering at the same time)
    or failed add nothing, and so do earlier answers to the same message (a
    regenerated answer starts afresh) and answers a later regeneration replaced. Earlier answers are
    their text only: their tool calls and results stay in the events (what the
    model made of them is in its text, and the tools it called may not be this
    agent's). An answer another agent wrote is labelled with its name
    (`label`), and the system prompt then says what the labels mean.

    With a `budget` (tokens, estimated by `consumers.context`), the oldest
    messages are left out until the prompt fits; the message answered is always
    kept. Then consecutive messages of one role are merged (the Messages API
    wants roles to alternate). The agent's tools go with it; the tool turns of
    this answer are added by the agent loop (`consumers.agent_loop`).
    """
    run = view.runs[run_id]
    agent = agent_named(run.agent)
    turns: list[ChatMessage] = []
    labelled = False
    branch = set(branch_of(view, run.message_id))
    for message in _conversation(view, run, branch):
        content = message.content
        if message.role == "assistant" and message.agent and message.agent != agent.name:
            content, labelled = label(message.agent) + content, True
        turns.append(ChatMessage(message.role, content))
    system = agent.system + ("\n\n" + SHARED_THREAD_NOTE if labelled else "")
    tools = tool_specs(agent, registry)
    cut: Trimmed | None = None
    if budget is not None:
        fitted = trimmed(turns, budget, fixed=fixed_tokens(system, (*tools, *handoff_spec(agent))))
        if fitted.dropped:
            cut, turns = fitted, list(fitted.messages)
    asked = view.message(run.message_id)
    prompt = Prompt(
        system=system,
        messages=repaired(turns),
        question=asked.content if asked else "",
        tools=tools,
        model=agent.model,
        max_tokens=agent.max_tokens,
        temperature=agent.temperature,
    )
    return Context(prompt, cut)


def trimmed_event(attempt: Attempt, cut: Trimmed) -> ev.ContextTrimmed:
    return ev.ContextTrimmed(
        run_id=attempt.run_id,
        agent=attempt.agent,
        dropped_messages=cut.dropped,
        kept_messages=cut.kept,
        estimated_tokens=cut.estimated_tokens,
        budget=cut.budget,
        attempt=max(1, attempt.attempt),
    )


def _latest_answers(view: ThreadView, before: str) -> set[str]:
    """The newest run per (message, agent) among those whose reply comes before `before`:
    the answer a regeneration replaced is no longer part of the conversation."""
    newest: dict[tuple[str, str], str] = {}
    for message in view.messages:
        if message.id == before:
            break
        run = view.runs.get(message.run_id or "")
        if message.role == "assistant" and run is not None and message.id == run.reply_id:
            newest[(run.message_id, run.agent)] = run.id
    return set(newest.values())


def _conversation(view: ThreadView, run: RunView, branch: set[str]) -> list[MessageView]:
    """The branch's messages before the run's reply, each question followed by its answers
    (a regenerated answer comes later in the stream than the questions after it)."""
    shown = _latest_answers(view, run.reply_id)
    questions: list[MessageView] = []
    answers: dict[str, list[MessageView]] = {}
    for message in view.messages:
        if message.id == run.reply_id:
            break
        if message.role == "user":
            if message.id in branch:
                questions.append(message)  # else an edit's earlier version, or another branch's
            continue
        if not message.content or message.status in ("pending", "streaming", "failed"):
            continue
        if _kept_answer(view, message, run, branch, shown):
            other = view.runs.get(message.run_id or "")
            asked = other.message_id if other else questions[-1].id if questions else ""
            answers.setdefault(asked, []).append(message)
    ordered: list[MessageView] = []
    for question in questions:
        if question.content:
            ordered.append(question)
        ordered.extend(answers.get(question.id, []))
    return ordered


def _kept_answer(
    view: ThreadView, message: MessageView, run: RunView, branch: set[str], shown: set[str]
) -> bool:
    """Whether an earlier answer is part of the conversation `run` continues: it answers
    a message of the run's branch, not the run's own message (a regenerated answer
    starts afresh), and no later regeneration replaced it."""
    other = view.runs.get(message.run_id or "")
    if other is None:
        return True
    return other.message_id in branch and other.message_id != run.message_id and other.id in shown
