"""The shipped `review` workflow: the writer drafts, the critic reviews, the writer revises.

Each is an agent turn (`WorkflowContext.agent_turn`): a message of that agent's
own in the thread, written with its system prompt from agents.toml, journaled,
so a run interrupted mid-way goes on from the turn it was in.
"""

from __future__ import annotations

from consumers.workflows.context import WorkflowContext
from consumers.workflows.registry import workflow

WRITER = "writer"
CRITIC = "critic"


def draft_prompt(request: str) -> str:
    return (
        "Write the text this request asks for. Give the text itself, ready to use.\n\n"
        f"The request:\n{request}"
    )


def review_prompt(request: str, draft: str) -> str:
    return (
        "Review this draft for the request it answers. A writer will revise it "
        "from your review, so make each point specific and actionable.\n\n"
        f"The request:\n{request}\n\nThe draft:\n{draft}"
    )


def revision_prompt(request: str, draft: str, review: str) -> str:
    return (
        "Revise your draft using the critic's review: make the changes that improve "
        "it, keep what already works, and give the whole revised text, ready to use.\n\n"
        f"The request:\n{request}\n\nYour draft:\n{draft}\n\nThe critic's review:\n{review}"
    )


@workflow(
    "review",
    description="The writer drafts, the critic reviews the draft, the writer revises it.",
    examples=("A three-sentence product blurb for a reusable water bottle.",),
)
async def review(ctx: WorkflowContext, message: str) -> dict[str, object]:
    draft = await ctx.agent_turn(WRITER, draft_prompt(message), name="draft")
    critique = await ctx.agent_turn(CRITIC, review_prompt(message, draft), name="review")
    final = await ctx.agent_turn(WRITER, revision_prompt(message, draft, critique), name="revise")
    return {
        "turns": [WRITER, CRITIC, WRITER],
        "words": {
            "draft": len(draft.split()),
            "review": len(critique.split()),
            "final": len(final.split()),
        },
    }
