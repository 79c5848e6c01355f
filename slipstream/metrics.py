"""Every Prometheus series of Slipstream, and serving them.

The web role answers `GET /metrics` (service/metrics_web.py); a worker or a
projector process serves its own on SLIPSTREAM_METRICS_PORT (`serving`). The
embedded process serves every role's series on its `/metrics`, since they are
all in one registry.

Labels are few and bounded: agents, models, tools and workflows come from the
deployment's own files, statuses and reasons from fixed lists here; never a
thread, a run, a user or any text of theirs. Observing is a counter increment
or a histogram observation per run, per model call, per tool call or per delta
fanned out: no Redis round trip. The one series read from Redis, the consumer
groups' lag and pending, is refreshed by a loop of its own (slipstream/group_lag.py).

With PROMETHEUS_MULTIPROC_DIR set (several web processes on one host) each
process writes its values to files there and a scrape of any of them sums the
counters and histograms of all (prometheus_client's multi-process mode).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    start_http_server,
)

from slipstream.process import StartupError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
UNKNOWN = "unknown"
"""The label of an agent, model or tool that is not known: never the caller's text."""

# prometheus_client leaves these three untyped: called through typed names.
_disable_created: Callable[[], None] = disable_created_metrics
_collect_files: Callable[..., object] = multiprocess.MultiProcessCollector
_mark_dead: Callable[[int], None] = multiprocess.mark_process_dead

# A `_created` sample per series doubles what a scrape carries, for nothing Grafana uses.
_disable_created()

# Seconds, from a chat's first words (tens of ms) to a long run or workflow (minutes).
_SLOW = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RUNS = Counter(
    "slipstream_runs",
    "Runs that ended, by the agent (or workflow) asked and how: completed, cancelled, failed.",
    ["agent", "status"],
)
RUN_SECONDS = Histogram(
    "slipstream_run_duration_seconds",
    "From a run's request to its end (a wait for approval or a retry's delay included).",
    ["agent", "status"],
    buckets=_SLOW,
)
RETRIES = Counter(
    "slipstream_run_retries",
    "Run attempts that failed and were put off to retry (a model error, a workflow step).",
    ["agent"],
)
DEAD_LETTERS = Counter(
    "slipstream_dead_letters",
    "Entries added to the dead-letter streams: a failed run, or a work item that could "
    "not be delivered.",
    ["reason"],
)
STEP_SECONDS = Histogram(
    "slipstream_workflow_step_duration_seconds",
    "A workflow step's or agent turn's run, in the attempt that ran it (replays are not timed).",
    ["workflow", "kind", "outcome"],
    buckets=_SLOW,
)
FIRST_TOKEN_SECONDS = Histogram(
    "slipstream_time_to_first_token_seconds",
    "From a chat run's request to its first delta appended, per attempt that streamed text.",
    ["agent"],
    buckets=_SLOW,
)
MODEL_TOKENS = Counter(
    "slipstream_model_tokens",
    "Model tokens, as the provider counted them, by agent, model and direction (input, output).",
    ["agent", "model", "direction"],
)
TOOL_CALLS = Counter(
    "slipstream_tool_calls",
    "Tool calls run for a model, by tool and outcome (ok, error).",
    ["tool", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "slipstream_delta_delivery_seconds",
    "From a delta's append (its stream entry's time) to the web process writing it to "
    "the sockets that watch its thread; once per delta and web process.",
    buckets=_FAST,
)
OPEN_SOCKETS = Gauge(
    "slipstream_open_sockets",
    "Websockets accepted and not yet closed.",
    multiprocess_mode="livesum",
)
REJECTED = Counter(
    "slipstream_rejected_requests",
    "Requests and sockets refused, by reason (see the README's table).",
    ["reason"],
)
GROUP_LAG = Gauge(
    "slipstream_consumer_group_lag",
    "Entries of a partition's stream not yet delivered to the consumer group.",
    ["group", "partition"],
    multiprocess_mode="max",
)
GROUP_PENDING = Gauge(
    "slipstream_consumer_group_pending",
    "Entries delivered to the consumer group and not yet acknowledged.",
    ["group", "partition"],
    multiprocess_mode="max",
)

TERMINAL = frozenset({"completed", "cancelled", "failed"})


def seconds_since_ms(epoch_ms: int, now: float | None = None) -> float:
    """Seconds from a Redis time (ms) to now by this host's clock; never negative, as
    two clocks may disagree by a little."""
    now = time.time() if now is None else now
    return max(0.0, now - epoch_ms / 1000)


def stream_id_ms(entry_id: str) -> int | None:
    """The milliseconds of a stream id (`<ms>-<seq>`), None for anything else."""
    ms, _, _ = entry_id.partition("-")
    return int(ms) if ms.isdigit() else None


def run_ended(agent: str, outcome: str, requested_ms: int | None) -> None:
    """A worker's run ended its attempt with `outcome` (runner.Runner.run's word)."""
    agent = agent or UNKNOWN
    if outcome == "retrying":
        RETRIES.labels(agent).inc()
        return
    if outcome not in TERMINAL:
        return  # waiting (a workflow's timer or signal, an approval): not the run's end
    RUNS.labels(agent, outcome).inc()
    if outcome == "failed":
        DEAD_LETTERS.labels("run_failed").inc()
    if requested_ms is not None:
        RUN_SECONDS.labels(agent, outcome).observe(seconds_since_ms(requested_ms))


def model_used(agent: str, model: str, input_tokens: int, output_tokens: int) -> None:
    MODEL_TOKENS.labels(agent or UNKNOWN, model or UNKNOWN, "input").inc(input_tokens)
    MODEL_TOKENS.labels(agent or UNKNOWN, model or UNKNOWN, "output").inc(output_tokens)


_exported = False


def exported() -> bool:
    """Whether this process's series are read: its web role has `/metrics`, or it serves
    them on SLIPSTREAM_METRICS_PORT. Only then are the series read from Redis refreshed."""
    return _exported


def mark_exported() -> None:
    global _exported
    _exported = True


def scrape() -> bytes:
    """The text a scrape gets: this process's series, or with PROMETHEUS_MULTIPROC_DIR set
    those of every process writing there."""
    return generate_latest(_registry())


def _registry() -> CollectorRegistry:
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    _collect_files(registry, path=directory)
    return registry


def process_exiting() -> None:
    """In multi-process mode, drop this process's live gauges (open sockets) from the sums."""
    if os.environ.get(MULTIPROC_ENV):
        _mark_dead(os.getpid())


@contextlib.contextmanager
def serving(host: str, port: int | None) -> Iterator[None]:
    """This process's series over HTTP on `host:port` while inside (nothing when `port` is
    None). A port that cannot be bound stops the start with one line."""
    if port is None:
        yield
        return
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server, thread = start_http_server(port, addr=host, registry=_registry())
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise StartupError(f"cannot serve metrics on {where}: {reason}") from None
    mark_exported()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)
        process_exiting()
