"""The agents a message can be addressed to."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_AGENT = "assistant"


@dataclass(frozen=True)
class Agent:
    name: str
    description: str
    system: str


AGENTS: dict[str, Agent] = {
    DEFAULT_AGENT: Agent(
        name=DEFAULT_AGENT,
        description="A helpful general assistant.",
        system="You are a helpful assistant in a chat. Answer clearly and concisely.",
    ),
}


def known_agents() -> list[str]:
    """Chat agents and workflows: a message can be addressed to any of them."""
    from consumers import workflows

    return sorted({*AGENTS, *workflows.names()})
