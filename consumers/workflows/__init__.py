"""Durable workflows: async functions whose steps are journaled as events."""

# The shipped examples register themselves on import.
from consumers.workflows import examples as _examples  # noqa: F401
from consumers.workflows import review as _review  # noqa: F401
from consumers.workflows.context import (
    NonDeterminism,
    RetryPolicy,
    Signal,
    StepError,
    WorkflowContext,
    current_step,
)
from consumers.workflows.registry import WorkflowDef, get, names, workflow

__all__ = [
    "NonDeterminism",
    "RetryPolicy",
    "Signal",
    "StepError",
    "WorkflowContext",
    "WorkflowDef",
    "current_step",
    "get",
    "names",
    "workflow",
]
