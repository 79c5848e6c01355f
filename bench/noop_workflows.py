"""Workflows of no-op steps, to measure what journaling a step costs.

The step is a coroutine, as a step of an async worker is natively: a plain function
runs in a thread (consumers/workflows/context.py `_call`), and the hand-off to it and
back costs about as much again as journaling the step.
"""

from __future__ import annotations

from consumers.workflows import WorkflowContext, workflow


async def nothing() -> None:
    return None


@workflow("noop4")
async def noop4(ctx: WorkflowContext, message: str) -> int:
    for i in range(4):
        await ctx.step(f"noop{i}", nothing)
    return 4


@workflow("noop5")
async def noop5(ctx: WorkflowContext, message: str) -> int:
    for i in range(5):
        await ctx.step(f"noop{i}", nothing)
    return 5
