"""OpenTelemetry traces: one trace per run, from the request that asked for it to the
websocket that delivered its end.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set: then each
role's `setup` builds a tracer provider (the SDK reads the other OTEL_* variables
itself) with a batch processor and the OTLP/HTTP exporter. Off, every role uses the
API's no-op tracer and nothing of the SDK is imported.

A run's context travels in its events, so whoever handles the run later (a worker
taking it over, a retry, the web process delivering it) joins the same trace:
`run.requested` carries the request's W3C `traceparent`, and the run hash keeps it
as `trace` for the claim to hand to each attempt.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Literal, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

Role = Literal["web", "worker", "projector"]
WEB: Role = "web"
WORKER: Role = "worker"
PROJECTOR: Role = "projector"

T = TypeVar("T")

_NOOP = trace.NoOpTracer()
# What a span hook gives with traces off: made once, so the hot path builds nothing.
_OFF: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)
_PROPAGATOR = TraceContextTextMapPropagator()
_tracers: dict[str, Tracer] = {}


def configured() -> bool:
    """Whether the environment asks for traces (an OTLP endpoint, the SDK not disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def service_name(role: Role) -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or f"slipstream-{role}"


def provider_for(role: Role) -> TracerProvider:
    """A tracer provider named for the role, with no processor yet."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider(resource=Resource.create({SERVICE_NAME: service_name(role)}))


def setup(role: Role) -> TracerProvider | None:
    """Export the role's spans over OTLP/HTTP when configured; None (no-op) otherwise.

    The provider flushes its batch at exit (the SDK's own atexit hook).
    """
    if not configured():
        return None
    # Imported only here: a process without traces never loads the SDK or protobuf.
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        from slipstream.process import StartupError

        raise StartupError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set, but the OpenTelemetry SDK is not installed: "
            "pip install 'slipstream[otel]'"
        ) from None

    provider = provider_for(role)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(role, provider)
    return provider


def install(role: Role, provider: TracerProvider) -> None:
    """Trace the role's work with `provider` (tests install one with an in-memory exporter)."""
    _tracers[role] = provider.get_tracer("slipstream")


def uninstall(role: Role) -> None:
    _tracers.pop(role, None)


def enabled(role: Role) -> bool:
    return role in _tracers


def tracer(role: Role) -> Tracer:
    return _tracers.get(role, _NOOP)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, or None when nothing is traced."""
    if not _tracers:
        return None  # only our own tracers make spans (no global provider is set)
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)  # writes nothing for an invalid (no-op) span
    return carrier.get("traceparent")


def with_trace(run_fields: dict[str, str], traceparent: str | None) -> dict[str, str]:
    """A new run's hash fields, with its trace (`trace`) when it has one: every claim
    reads the hash anyway, so each attempt finds its trace without another read."""
    return {**run_fields, "trace": traceparent} if traceparent else run_fields


def context_of(traceparent: str | None) -> Context | None:
    """The context a traceparent names (None for none or a malformed one)."""
    if not traceparent:
        return None
    context = _PROPAGATOR.extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def context_from_headers(headers: list[tuple[bytes, bytes]]) -> Context | None:
    """The caller's context from an ASGI request's `traceparent`/`tracestate` headers."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in (b"traceparent", b"tracestate")
    }
    return _PROPAGATOR.extract(carrier) if carrier else None


def run_attributes(
    thread_id: str, run_id: str, attempt: int | None = None, agent: str = ""
) -> dict[str, str | int]:
    """The attributes that place a span in a run, named as the logs name them."""
    attributes: dict[str, str | int] = {"slipstream.thread": thread_id, "slipstream.run": run_id}
    if attempt is not None:
        attributes["slipstream.attempt"] = attempt
    if agent:
        attributes["slipstream.agent"] = agent
    return attributes


def span(role: Role, name: str, attributes: dict[str, str | int]) -> AbstractContextManager[Span]:
    """A span of the role's, current inside the block (nothing built with traces off)."""
    traced = _tracers.get(role)
    if traced is None:
        return _OFF
    return traced.start_as_current_span(name, attributes=attributes)


def attempt_span(
    traceparent: str | None,
    thread_id: str,
    run_id: str,
    attempt: int,
    agent: str,
    worker: str,
) -> AbstractContextManager[Span]:
    """One attempt of a run, a child of the request that asked for the run."""
    traced = _tracers.get(WORKER)
    if traced is None:  # the hot path with traces off: nothing built, not even attributes
        return _OFF
    attributes = run_attributes(thread_id, run_id, attempt, agent)
    attributes["slipstream.worker"] = worker
    return traced.start_as_current_span(
        f"run {agent}" if agent else "run",
        context=context_of(traceparent),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def note_outcome(outcome: str) -> None:
    """How the current attempt ended (completed, retrying, ...), on its span."""
    if WORKER in _tracers:
        trace.get_current_span().set_attribute("slipstream.outcome", outcome)


def model_span(provider: str, model: str | None) -> AbstractContextManager[Span]:
    """One model call, with the GenAI semantic conventions' names (`record_usage` adds
    its tokens)."""
    traced = _tracers.get(WORKER)
    if traced is None:
        return _OFF
    attributes: dict[str, str] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the older name of the same attribute
    }
    if model:
        attributes["gen_ai.request.model"] = model
    name = f"chat {model}" if model else "chat"
    return traced.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def record_usage(span: Span, input_tokens: int, output_tokens: int, model: str | None) -> None:
    if not span.is_recording():
        return
    span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
    if model:
        span.set_attribute("gen_ai.response.model", model)


async def traced(
    name: str,
    attributes: dict[str, str | int],
    work: Awaitable[T],
    *,
    after: Callable[[Span, T], None] | None = None,
) -> T:
    """Await `work` inside a worker span (a tool call, a workflow step); `after` may add
    what the result says."""
    traced_by = _tracers.get(WORKER)
    if traced_by is None:
        return await work
    with traced_by.start_as_current_span(name, attributes=attributes) as span:
        result = await work
        if after is not None:
            after(span, result)
        return result
