"""Spans for the websocket delivery of a run's end, in the run's trace.

A web process learns each run's trace from the `run.requested` its partition
tails pass on (the event's `traceparent`), and when the run's terminal event goes
out to the thread's sockets it spans that delivery as a child of the request that
asked for the run. Nothing more is read for it. A tail started after the request
(the thread's first socket opened later) has not seen it: that delivery has no span.
Used only when traces are on (`tracing.enabled(tracing.WEB)`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import orjson
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from slipstream import tracing
from slipstream.events import TERMINAL_RUN_EVENTS

# Runs remembered per web process; the oldest go first. A run ends long before ten
# thousand newer ones are requested, and a retried run keeps its entry meanwhile.
REMEMBERED_RUNS = 10_000


class RunTraces:
    """Run id → the context of the request that asked for it, for the runs seen."""

    def __init__(self, limit: int = REMEMBERED_RUNS) -> None:
        self.limit = limit
        self._contexts: dict[str, Context] = {}

    def see(self, fields: dict[str, str]) -> Context | None:
        """Remember a `run.requested`'s trace; for a run's terminal event, the run's
        trace (None when it has none, or was not seen)."""
        kind = fields.get("type")
        if kind == "run.requested":
            try:
                traceparent = orjson.loads(fields.get("body", "{}")).get("traceparent")
            except (orjson.JSONDecodeError, AttributeError):
                return None  # unreadable: the fan-out reports it as such
            context = tracing.context_of(traceparent if isinstance(traceparent, str) else None)
            if context is not None:
                if len(self._contexts) >= self.limit:
                    del self._contexts[next(iter(self._contexts))]
                self._contexts[fields.get("run", "")] = context
            return None
        if kind in TERMINAL_RUN_EVENTS:
            return self._contexts.get(fields.get("run", ""))
        return None


@contextmanager
def delivery_span(parent: Context, fields: dict[str, str], sockets: int) -> Iterator[None]:
    """The run's end handed to the thread's sockets (written, or queued for a busy one)."""
    kind = fields.get("type", "")
    with tracing.tracer(tracing.WEB).start_as_current_span(
        f"deliver {kind}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            **tracing.run_attributes(fields.get("thread", ""), fields.get("run", "")),
            "slipstream.event": kind,
            "slipstream.sockets": sockets,
        },
    ):
        yield
