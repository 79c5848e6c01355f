"""Who answers a message: a decision over the agents file (no Redis).

In order: the sender's pick, then `@mentions`, then the first agent whose
`route` pattern matches, then (with `[router] classifier = true` and a
classifier given) one model call that must name an agent, then the default.
The only I/O is that call (`model_classifier`), bounded in time; whatever it
answers or however it fails, a message is routed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

from consumers.agents import ROUTER_USAGE_NAME, Agent, AgentsFile
from consumers.llm.base import LLM, ChatMessage, Classification, Prompt
from consumers.llm.parts import TextPart, UsagePart
from consumers.redact import shown_reason
from slipstream.errors import ProviderError
from slipstream.events import RoutedBy

log = logging.getLogger(__name__)

By = RoutedBy

ROUTER = ROUTER_USAGE_NAME  # the `agent` of a classification call's `model.usage`
QUESTION_CHARS = 4000  # of the message, in the classifier's question: enough to judge by
ANSWER_CHARS = 200  # of its answer: a name is short; anything longer is not one


@dataclass(frozen=True)
class Answer:
    """What a classifier said (`text`), what the call cost, and why it failed, if it did."""

    text: str
    usage: UsagePart | None = None
    error: str | None = None


Classifier = Callable[[str, Sequence[Agent]], Awaitable[str | Answer]]
"""`classify(message, agents)`: one model call whose answer should be an agent's name."""

# `@name` at the start or after a space or punctuation, not inside an address (a@b.c).
_MENTION = re.compile(r"(?<![A-Za-z0-9_.@-])@([A-Za-z0-9_-]{1,64})")
_ANSWER_TRIM = " \t\r\n\"'`.*@"


@dataclass(frozen=True)
class Decision:
    agents: tuple[str, ...]
    by: By
    reason: str
    usage: UsagePart | None = None  # the classification call's, when one was made


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
        replied = await classifier(content, agents_file.agents)
    except Exception as exc:  # a failed classification must not stop the message
        replied = Answer("", error=shown_reason(str(exc)) or type(exc).__name__)
    answer = replied if isinstance(replied, Answer) else Answer(replied)
    if answer.error is not None:
        reason = f"the classifier failed ({answer.error}); the default"
        return Decision((default,), "default", reason, answer.usage)
    name = answer.text.strip(_ANSWER_TRIM)
    if name in agents_file.by_name:
        return Decision((name,), "classifier", f"the classifier chose {name}", answer.usage)
    text = answer.text
    shown = text if len(text) <= 60 else text[:57] + "..."
    return Decision(
        (default,),
        "default",
        f"the classifier answered {shown!r}, not an agent's name",
        answer.usage,
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


def model_classifier(llm: LLM, default: str, *, timeout_s: float) -> Classifier:
    """A classifier that asks `llm` once, within `timeout_s`.

    It never raises: a model error or the timeout is an `Answer` with `error`
    (the router then picks the default and says why). The call's usage comes
    back with the answer when the model reported it (a call cut off by the
    timeout reports none).
    """

    async def classify(content: str, agents: Sequence[Agent]) -> Answer:
        prompt = Prompt(
            system=CLASSIFIER_SYSTEM,
            messages=(ChatMessage("user", classifier_question(content[:QUESTION_CHARS], agents)),),
            question=content,
            classify=Classification(tuple(a.name for a in agents), default),
        )
        text: list[str] = []
        usage: UsagePart | None = None
        try:
            async with asyncio.timeout(timeout_s):
                async for part in llm.stream(prompt):
                    if isinstance(part, TextPart) and sum(map(len, text)) < ANSWER_CHARS:
                        text.append(part.text)
                    elif isinstance(part, UsagePart):
                        usage = part
        except TimeoutError:
            return Answer("".join(text), usage, f"no answer within {timeout_s:g} s")
        except ProviderError as exc:  # route all the same; the full error to the log only
            log.warning("the classifier's model call failed: %s", exc)
            return Answer("".join(text), usage, shown_reason(exc.summary))
        except Exception as exc:  # a bug in a provider: route all the same
            error = shown_reason(str(exc)) or type(exc).__name__
            return Answer("".join(text), usage, error)
        return Answer("".join(text)[:ANSWER_CHARS], usage)

    return classify
