"""The example workflows that ship: `research`, `approval` and `reminder`, runnable
from the chat (`review`, of several agents, has a module of its own)."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

from pydantic import BaseModel

from consumers.workflows.context import RetryPolicy, WorkflowContext, current_step
from consumers.workflows.registry import workflow

_STOP = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "why",
    )
)
MAX_REVISIONS = 3


class Plan(BaseModel):
    question: str
    topics: list[str]


class Summary(BaseModel):
    words: int
    sentences: int
    topics_covered: list[str]


def analyze(question: str) -> Plan:
    """Pick the topics an answer must cover: the question's most frequent content words."""
    words = [w for w in re.findall(r"[a-z0-9']+", question.lower()) if w not in _STOP]
    topics = [word for word, _ in Counter(words).most_common(3)] or ["the question"]
    return Plan(question=question, topics=topics)


def finalize(answer: str, plan: Plan) -> Summary:
    lowered = answer.lower()
    return Summary(
        words=len(answer.split()),
        sentences=len(re.findall(r"[.!?](\s|$)", answer)),
        topics_covered=[t for t in plan.topics if t in lowered],
    )


@workflow(
    "research",
    description="Analyse the question, stream an answer, then summarise it.",
    examples=("How do Redis Streams consumer groups share work between workers?",),
)
async def research(ctx: WorkflowContext, message: str) -> dict[str, object]:
    plan = await ctx.step("analyze", analyze, message)
    answer = await ctx.run_agent(
        "assistant",
        f"{message}\n\nCover these topics: {', '.join(plan.topics)}.",
        name="generate",
    )
    summary = await ctx.step("finalize", finalize, answer, plan)
    return {"topics": plan.topics, **summary.model_dump()}


class Publication(BaseModel):
    published: bool
    words: int
    idempotency_key: str


def publish(draft: str) -> Publication:
    """Where a real system would post the text; the key makes a repeated post a no-op."""
    return Publication(
        published=True, words=len(draft.split()), idempotency_key=current_step().idempotency_key
    )


@workflow(
    "approval",
    signals=("approval",),
    description="Draft an answer, wait for a person to approve it, then publish or revise.",
    examples=("Draft a two-sentence release note for version 2.1, for me to approve.",),
)
async def approval(ctx: WorkflowContext, message: str) -> dict[str, object]:
    draft = await ctx.run_agent("assistant", message, name="draft")
    for revision in range(MAX_REVISIONS + 1):
        decision = await ctx.wait_for("approval", timeout=timedelta(days=7))
        if decision.timed_out:
            return {"status": "expired", "revisions": revision}
        payload = decision.payload if isinstance(decision.payload, dict) else {}
        if payload.get("approved"):
            published = await ctx.step("publish", publish, draft)
            return {"status": "published", "revisions": revision, **published.model_dump()}
        if revision == MAX_REVISIONS:
            break
        feedback = str(payload.get("feedback") or "Make it better.")
        draft = await ctx.run_agent(
            "assistant", f"{message}\n\nRevise the draft. Feedback: {feedback}", name="revise"
        )
    return {"status": "rejected", "revisions": MAX_REVISIONS}


_WHEN = re.compile(
    r"^\s*in\s+(\d+(?:\.\d+)?)\s*(s|sec|seconds?|m|min|minutes?|h|hours?|d|days?)\b[:,]?\s*(.*)$",
    re.I | re.S,
)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Reminder(BaseModel):
    seconds: float
    text: str


def parse_reminder(message: str) -> Reminder:
    """'in 10 minutes: stretch' -> 600 s, 'stretch'."""
    match = _WHEN.match(message)
    if match is None:
        raise ValueError("say when first, e.g. 'in 10 minutes: stretch'")
    amount, unit, text = match.groups()
    return Reminder(seconds=float(amount) * _UNIT_S[unit[0].lower()], text=text.strip() or "this")


@workflow(
    "reminder",
    description="'in 10 minutes: stretch': sleeps durably, then reminds you.",
    examples=("in 1 minute: stretch your legs",),
)
async def reminder(ctx: WorkflowContext, message: str) -> str:
    plan = await ctx.step("parse", parse_reminder, message, retry=RetryPolicy(max_attempts=1))
    await ctx.sleep(plan.seconds)
    return f"Reminder: {plan.text}"
