"""Workflows register by name; a message addressed to that name runs one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from consumers.prompt_examples import checked_examples

if TYPE_CHECKING:
    from consumers.workflows.context import WorkflowContext

WorkflowFn = Callable[["WorkflowContext", str], Awaitable[Any]]


@dataclass(frozen=True)
class WorkflowDef:
    name: str
    fn: WorkflowFn
    version: int
    signals: frozenset[str]
    description: str
    examples: tuple[str, ...] = ()
    """Prompts the chat offers in an empty thread (consumers/prompt_examples.py)."""


_REGISTRY: dict[str, WorkflowDef] = {}


def workflow(
    name: str | None = None,
    *,
    version: int = 1,
    signals: tuple[str, ...] = (),
    description: str = "",
    examples: tuple[str, ...] = (),
) -> Callable[[WorkflowFn], WorkflowFn]:
    """Register `async def fn(ctx, message)` as the workflow `name` (default: its own name).

    `signals` names what the workflow may `wait_for`: a signal of another name
    is refused with 409 instead of being kept for a wait that never comes.
    `examples`: a few messages to start it with, which the chat offers in an
    empty thread (at most 6, each 1 to 300 characters; else a ValueError here).
    """

    def register(fn: WorkflowFn) -> WorkflowFn:
        key = name or fn.__name__
        offered = checked_examples(examples, f"workflow {key!r}")
        existing = _REGISTRY.get(key)
        if existing is not None and existing.fn is not fn:
            raise ValueError(f"a workflow named {key!r} is registered already ({existing.fn!r})")
        _REGISTRY[key] = WorkflowDef(
            name=key,
            fn=fn,
            version=version,
            signals=frozenset(signals),
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            examples=offered,
        )
        return fn

    return register


def get(name: str) -> WorkflowDef | None:
    return _REGISTRY.get(name)


def names() -> list[str]:
    return sorted(_REGISTRY)


def load_modules(modules: tuple[str, ...]) -> None:
    """Import the modules that define a deployment's own workflows (SLIPSTREAM_WORKFLOWS)."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(
                f"SLIPSTREAM_WORKFLOWS names {module!r}, which cannot be imported: {exc}"
            ) from exc


def load_modules_or_exit(modules: tuple[str, ...]) -> None:
    """For the processes' entry points: a module that cannot load stops the process."""
    import sys

    try:
        load_modules(modules)
    except ImportError as exc:
        sys.exit(f"configuration error: {exc}")
