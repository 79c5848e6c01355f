"""Traces (slipstream/tracing.py): one trace per run, from the HTTP request through the
worker's attempts, model and tool calls and workflow steps to the websocket delivery;
collected in-process with the SDK's in-memory exporter on a running system."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http import trace_exporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from websockets.asyncio.client import connect

from consumers.llm.scripted import ScriptedLLM
from consumers.schedules import Schedule, Schedules
from consumers.worker import Worker
from service import commands
from slipstream import events as ev
from slipstream import tracing
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.errors import ProviderError
from slipstream.keys import Keyspace
from slipstream.store import EventStore
from tests.fake_llm import FlakyLLM, GatedLLM
from tests.harness import System, frames_until, running_system
from tests.processes import env_for
from tests.test_workflows import FakeClock
from tests.waits import until

ROLES: tuple[tracing.Role, ...] = (tracing.WEB, tracing.WORKER)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Every role of the test process traced into one in-memory exporter."""
    exporter = InMemorySpanExporter()
    providers = []
    for role in ROLES:
        provider = tracing.provider_for(role)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing.install(role, provider)
        providers.append(provider)
    yield exporter
    for role, provider in zip(ROLES, providers, strict=True):
        tracing.uninstall(role)
        provider.shutdown()


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def trace_of(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


async def send_watched(system: System, thread_id: str, content: str, agent: str) -> str:
    """Send with a socket already on the thread (as the chat has), until the run ends."""
    async with connect(system.ws_url(thread_id)) as socket:
        # Its snapshot comes once it is subscribed: the partition's tail reads on from there.
        assert orjson.loads(await socket.recv())["type"] == "snapshot"
        accepted = await system.send(thread_id, content, agent=agent)
        await asyncio.wait_for(
            frames_until(socket, "run.completed", accepted["run_id"]), timeout=20
        )
    return accepted["run_id"]


async def spans_until(exporter: InMemorySpanExporter, *prefixes: str) -> list[ReadableSpan]:
    """The finished spans once one of each prefix is there (an attempt's span ends just
    after its last write, which may reach the socket first)."""

    async def there() -> bool:
        spans = exporter.get_finished_spans()
        return all(named(spans, p) for p in prefixes)

    await until(there, within=10)
    return list(exporter.get_finished_spans())


async def test_a_chat_run_with_a_tool_is_one_trace_from_request_to_delivery(
    backend: Backend, settings: Settings, exporter: InMemorySpanExporter
) -> None:
    async with running_system(backend, settings) as system:
        thread_id = await system.new_thread()
        run_id = await send_watched(
            system, thread_id, 'add [[tool calculator {"expression": "2+3"}]]', "researcher"
        )
        spans = await spans_until(exporter, "POST /api/threads/{thread_id}/messages", "run ")
        spans = await spans_until(exporter, "deliver run.completed")

    (request,) = named(spans, "POST /api/threads/{thread_id}/messages")
    assert request.kind == SpanKind.SERVER
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 202
    assert request.attributes["http.route"] == "/api/threads/{thread_id}/messages"
    assert request.resource.attributes["service.name"] == "slipstream-web"
    trace_id = trace_of(request)

    (attempt,) = [
        s for s in named(spans, "run ") if (s.attributes or {})["slipstream.run"] == run_id
    ]
    assert trace_of(attempt) == trace_id
    assert attempt.parent is not None and request.context is not None
    assert attempt.parent.span_id == request.context.span_id  # across processes, by the event
    assert dict(attempt.attributes or {}) | {"slipstream.worker": ""} == {
        "slipstream.thread": thread_id,
        "slipstream.run": run_id,
        "slipstream.attempt": 1,
        "slipstream.agent": "researcher",
        "slipstream.worker": "",
        "slipstream.outcome": "completed",
    }
    assert attempt.resource.attributes["service.name"] == "slipstream-worker"

    models = named(spans, "chat")
    assert len(models) == 2  # the call that asks for the tool, then the answer
    for model in models:
        assert trace_of(model) == trace_id
        assert model.parent is not None and attempt.context is not None
        assert model.parent.span_id == attempt.context.span_id
        attributes = model.attributes or {}
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "scripted"
        assert attributes["gen_ai.system"] == "scripted"
        assert attributes["gen_ai.response.model"] == "scripted"
        assert int(str(attributes["gen_ai.usage.input_tokens"])) > 0
        assert int(str(attributes["gen_ai.usage.output_tokens"])) >= 0
    assert int(str((models[1].attributes or {})["gen_ai.usage.output_tokens"])) > 0

    (tool,) = named(spans, "execute_tool calculator")
    assert trace_of(tool) == trace_id
    assert (tool.attributes or {})["gen_ai.tool.name"] == "calculator"
    assert (tool.attributes or {})["gen_ai.operation.name"] == "execute_tool"
    assert tool.status.is_ok

    (delivery,) = named(spans, "deliver run.completed")
    assert trace_of(delivery) == trace_id
    assert delivery.parent is not None and delivery.parent.span_id == request.context.span_id
    assert (delivery.attributes or {})["slipstream.sockets"] == 1
    assert delivery.resource.attributes["service.name"] == "slipstream-web"


async def test_workflow_steps_are_spans_of_the_run(
    backend: Backend, settings: Settings, exporter: InMemorySpanExporter
) -> None:
    async with running_system(backend, settings) as system:
        thread_id = await system.new_thread()
        run_id = await send_watched(system, thread_id, "How do streams work?", "research")
        spans = await spans_until(exporter, "step finalize", "run research")

    (attempt,) = named(spans, "run research")
    assert (attempt.attributes or {})["slipstream.run"] == run_id
    steps = {s.name: s for s in named(spans, "step ")}
    assert set(steps) == {"step analyze", "step generate", "step finalize"}
    for step in steps.values():
        assert trace_of(step) == trace_of(attempt)
        assert step.parent is not None and attempt.context is not None
        assert step.parent.span_id == attempt.context.span_id
    assert (steps["step generate"].attributes or {})["slipstream.step.kind"] == "agent"
    (model,) = named(spans, "chat")
    assert model.parent is not None
    generate = steps["step generate"].context
    assert generate is not None and model.parent.span_id == generate.span_id


async def test_a_retry_is_a_second_attempt_in_the_same_trace(
    backend: Backend, settings: Settings, exporter: InMemorySpanExporter
) -> None:
    llm = FlakyLLM([ProviderError("overloaded", retryable=True)])
    async with running_system(backend, settings, llm=llm) as system:
        thread_id = await system.new_thread()
        run_id = await send_watched(system, thread_id, "hello", "assistant")

        async def both() -> bool:
            return len(named(exporter.get_finished_spans(), "run ")) == 2

        await until(both, within=10)
    spans = exporter.get_finished_spans()
    first, second = sorted(named(spans, "run "), key=lambda s: s.start_time or 0)
    assert trace_of(first) == trace_of(second)
    assert [
        ((s.attributes or {})["slipstream.attempt"], (s.attributes or {})["slipstream.outcome"])
        for s in (first, second)
    ] == [(1, "retrying"), (2, "completed")]
    assert {(s.attributes or {})["slipstream.run"] for s in (first, second)} == {run_id}
    failed, answered = sorted(named(spans, "chat"), key=lambda s: s.start_time or 0)
    assert not failed.status.is_ok and answered.status.is_ok
    assert trace_of(failed) == trace_of(first)


async def test_a_takeover_joins_the_trace_of_the_request(
    redis_url: str, settings: Settings, exporter: InMemorySpanExporter
) -> None:
    backend = Backend.connect(redis_url)
    store = EventStore(backend, Keyspace(settings.partitions))
    fast = dataclasses.replace(settings, lease_ms=200)
    try:
        thread_id, _ = await commands.create_thread(store)
        with tracing.span(tracing.WEB, "POST /api/threads/{thread_id}/messages", {}):
            sent = await commands.send_message(store, thread_id, "hi there", "assistant")
        # The first worker dies mid-answer: its run task is gone without a word.
        gated = GatedLLM()
        dying = Worker(backend, store, gated, fast)
        first = asyncio.create_task(dying.run_once())
        await asyncio.wait_for(gated.started.wait(), timeout=10)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        # Another takes the run over once its lease and the item's idle time are over.
        taker = Worker(backend, store, ScriptedLLM(words=20, delay_ms=0), fast)

        async def taken_over() -> bool:
            await taker.run_once()  # busy until the lease is over: it leaves the run then
            state = await store.run_state(sent.run_id, thread_id)
            return state.get("status") == "completed"

        await until(taken_over, within=10)
    finally:
        await backend.close()
    spans = exporter.get_finished_spans()
    (request,) = named(spans, "POST ")
    lost, taken = sorted(named(spans, "run "), key=lambda s: s.start_time or 0)
    assert {trace_of(lost), trace_of(taken)} == {trace_of(request)}
    assert [(s.attributes or {})["slipstream.attempt"] for s in (lost, taken)] == [1, 2]
    assert {(s.attributes or {})["slipstream.run"] for s in (lost, taken)} == {sent.run_id}
    assert (taken.attributes or {})["slipstream.outcome"] == "completed"
    assert (lost.attributes or {})["slipstream.worker"] != (taken.attributes or {})[
        "slipstream.worker"
    ]


async def test_a_scheduled_run_starts_its_trace_at_the_fire(
    store: EventStore, exporter: InMemorySpanExporter
) -> None:
    clock = FakeClock()
    schedules = Schedules(store, clock)
    state = await schedules.put(Schedule(name="hourly", workflow="research", every_s=3600))
    clock.advance(hours=1)
    assert await schedules.fire_due() == 1
    (fire,) = named(exporter.get_finished_spans(), "schedule hourly")
    thread_id = state.schedule.thread_id
    (requested,) = [
        s.event for s in await store.read(thread_id) if isinstance(s.event, ev.RunRequested)
    ]
    # The context as the event and the run hash keep it, for every attempt to join.
    traceparent = requested.traceparent
    assert fire.context is not None and traceparent is not None
    trace_id, span_id = f"{fire.context.trace_id:032x}", f"{fire.context.span_id:016x}"
    assert traceparent.startswith(f"00-{trace_id}-{span_id}-")
    # As `redis-cli XRANGE` shows it: in the entry's JSON body.
    entries = await store.redis.xrange(store.stream_key(thread_id))
    (body,) = [f["body"] for _, f in entries if f["type"] == "run.requested"]
    assert orjson.loads(body)["traceparent"] == traceparent
    assert (await store.run_state(requested.run_id, thread_id))["trace"] == traceparent


def test_without_an_endpoint_nothing_is_built_or_traced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the OTLP exporter was built with no endpoint set")

    monkeypatch.setattr(trace_exporter.OTLPSpanExporter, "__init__", refuse)
    assert tracing.setup(tracing.WORKER) is None
    assert not tracing.enabled(tracing.WORKER)
    with tracing.attempt_span(None, "t", "t.r", 1, "assistant", "w") as span:
        assert not span.is_recording()
        assert tracing.current_traceparent() is None
    assert tracing.with_trace({"status": "queued"}, None) == {"status": "queued"}


# A process where the `otel` extra is not installed: the SDK's modules cannot be imported.
_WITHOUT_THE_SDK = """
import runpy, sys
for name in ("opentelemetry.sdk", "opentelemetry.exporter"):
    sys.modules[name] = None
sys.argv = ["consumers"]
runpy.run_module("consumers", run_name="__main__")
"""


def test_an_endpoint_without_the_sdk_stops_the_start_with_one_line(redis_url: str) -> None:
    env = env_for(REDIS_URL=redis_url, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_THE_SDK],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    said = [line for line in done.stderr.splitlines() if line.strip()]
    assert said == [
        "worker: OTEL_EXPORTER_OTLP_ENDPOINT is set, but the OpenTelemetry SDK is not "
        "installed: pip install 'slipstream[otel]'"
    ]


def test_otel_service_name_wins_over_the_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "chat-prod")
    assert tracing.provider_for(tracing.WORKER).resource.attributes["service.name"] == "chat-prod"


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_with_an_endpoint_spans_are_posted_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    _Collector.received = []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    provider = tracing.setup(tracing.WORKER)
    try:
        assert provider is not None
        with tracing.attempt_span(None, "t", "t.r", 1, "assistant", "w") as span:
            assert span.is_recording()
            assert tracing.current_traceparent() is not None
        assert provider.force_flush(5_000)
    finally:
        tracing.uninstall(tracing.WORKER)
        if provider is not None:
            provider.shutdown()
        server.shutdown()
        server.server_close()
    ((path, content_type, body),) = _Collector.received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    names = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert names["service.name"] == "slipstream-worker"
    (scope,) = resource_spans.scope_spans
    assert [s.name for s in scope.spans] == ["run assistant"]


async def test_a_callers_traceparent_is_joined_and_only_ours_is_stored(
    real_backend: Backend, settings: Settings, exporter: InMemorySpanExporter
) -> None:
    """A client chooses its trace id (W3C: the request joins the caller's trace), but what
    run.requested and the run hash keep is the server span's own 55-character
    traceparent: a long or odd header is never copied into the events."""
    caller = "00-" + "a1" * 16 + "-" + "b2" * 8 + "-01"
    future = "cc-" + "c3" * 16 + "-" + "d4" * 8 + "-01-" + "x" * 400  # a later version's
    async with running_system(real_backend, settings) as system:
        thread_id = await system.new_thread()
        stored = []
        for header in (caller, future, "00-" + "e5" * 16 + "-" + "f6" * 8 + "-01" + "y" * 5000):
            response = await system.http.post(
                f"/api/threads/{thread_id}/messages",
                json={"content": "hi"},
                headers={"traceparent": header},
            )
            assert response.status_code == 202, response.text
            run_id = response.json()["run_id"]
            await system.wait_for_run(thread_id, run_id)
            part = system.runtime.store.keys.partition(thread_id)
            trace = await real_backend.client.hget(part.run(run_id), "trace")
            requested = [
                s.event
                for s in await system.runtime.store.read(thread_id)
                if isinstance(s.event, ev.RunRequested) and s.event.run_id == run_id
            ]
            assert [r.traceparent for r in requested] == [trace]
            stored.append(trace)
    assert all(len(trace) == 55 and trace.startswith("00-") for trace in stored)
    assert stored[0].split("-")[1] == "a1" * 16  # the caller's trace, joined
    assert stored[1].split("-")[1] == "c3" * 16
    assert stored[2].split("-")[1] != "e5" * 16  # malformed: a trace of its own
