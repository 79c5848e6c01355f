"""Who answers a message: a pure decision over the agents file (no Redis, no I/O).

In order: the sender's pick, then `@mentions`, then the first agent whose
`route` pattern matches, then (with `[router] classifier = true` and a
classifier given) one model call that must name an agent, then the default.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

from consumers.agents import Agent, AgentsFile
from slipstream.events import RoutedBy

By = RoutedBy

Classifier = Callable[[str, Sequence[Agent]], Awaitable[str]]
"""`classify(message, agents)`: one model call whose answer should be an agent's name."""

# `@name` at the start or after a space or punctuation, not inside an address (a@b.c).
_MENTION = re.compile(r"(?<![A-Za-z0-9_.@-])@([A-Za-z0-9_-]{1,64})")
_ANSWER_TRIM = " \t\r\n\"'`.*@"


@dataclass(frozen=True)
class Decision:
    agents: tuple[str, ...]
    by: By
    reason: str


def mentions(content: str, names: Collection[str]) -> list[str]:
    """The known names `@mentioned` in `content`, in order, each once."""
    found: list[str] = []
    for match in _MENTION.finditer(content):
        name = match.group(1)
        if name in names and name not in found:
            found.append(name)
    return found


async def route(
    content: str,
    pick: str | Sequence[str] | None,
    agents_file: AgentsFile,
    classifier: Classifier | None = None,
    *,
    workflows: Collection[str] = (),
) -> Decision:
    """Decide who answers `content`. `pick` is what the sender chose (already checked);
    `workflows` are the other names a mention may address."""
    picked = [pick] if isinstance(pick, str) else list(pick or ())
    if picked:
        return Decision(tuple(picked), "pick", "chosen by the sender")
    named = mentions(content, {*agents_file.by_name, *workflows})
    if named:
        said = ", ".join(f"@{n}" for n in named)
        return Decision(tuple(named), "mention", f"mentioned {said}")
    for agent in agents_file.agents:
        for pattern in agent.route:
            match = pattern.search(content)
            if match:
                return Decision(
                    (agent.name,),
                    "rule",
                    f"{agent.name}'s rule {pattern.pattern} matched {match.group(0)!r}",
                )
    default = agents_file.router.default
    if not agents_file.router.classifier:
        return Decision((default,), "default", "no pick, mention or rule matched")
    if classifier is None:
        return Decision((default,), "default", "no rule matched and no classifier is set up")
    try:
        answer = await classifier(content, agents_file.agents)
    except Exception as exc:  # a failed classification must not stop the message
        return Decision((default,), "default", f"the classifier failed ({exc}); the default")
    name = answer.strip(_ANSWER_TRIM)
    if name in agents_file.by_name:
        return Decision((name,), "classifier", f"the classifier chose {name}")
    shown = answer if len(answer) <= 60 else answer[:57] + "..."
    return Decision(
        (default,), "default", f"the classifier answered {shown!r}, not an agent's name"
    )


CLASSIFIER_SYSTEM = (
    "You route messages in a shared chat to the agent best suited to answer them. "
    "Read the message and the list of agents, then reply with exactly one agent name "
    "from the list and nothing else: no punctuation, no explanation."
)


def classifier_question(content: str, agents: Sequence[Agent]) -> str:
    """What a model-backed classifier asks (with `CLASSIFIER_SYSTEM` as its system prompt)."""
    listed = "\n".join(f"- {a.name}: {a.description}" for a in agents)
    return f"Agents:\n{listed}\n\nMessage:\n{content}\n\nWhich agent should answer?"
