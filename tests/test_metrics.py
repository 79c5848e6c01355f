"""Prometheus metrics, scraped over HTTP from running roles and read with prometheus_client's
own parser: the web role's `/metrics` (every role in one process), a worker process's
SLIPSTREAM_METRICS_PORT, and several web processes summed through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from slipstream import metrics
from slipstream.backend import Backend
from slipstream.config import Settings
from slipstream.group_lag import GroupLag
from slipstream.keys import PROJECTORS_GROUP, WORKERS_GROUP, Keyspace
from tests.harness import System, running_system
from tests.ports import free_port
from tests.processes import (
    chat,
    env_for,
    exits_within,
    processes,
    spawn,
    wait_for_status,
    wait_healthy,
)
from tests.waits import until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


@pytest.fixture
async def system(real_backend: Backend, settings: Settings) -> AsyncIterator[System]:
    async with running_system(real_backend, settings) as running:
        yield running


async def test_a_run_is_counted_timed_and_delivered(system: System) -> None:
    before = await scrape(system.http)
    thread_id = await system.new_thread()
    async with connect(system.ws_url(thread_id)) as watching:
        await watching.recv()  # the snapshot: the socket is open and counted
        during = await scrape(system.http)
        assert total(during, "slipstream_open_sockets") >= 1
        sent = await system.send(thread_id, "hello metrics")
        view = await system.wait_for_run(thread_id, sent["run_id"])
    assert view["runs"][sent["run_id"]]["status"] == "completed"
    agent = view["runs"][sent["run_id"]]["agent"]

    async def counted() -> bool:
        now = await scrape(system.http)
        return total(now, "slipstream_runs_total", agent=agent, status="completed") > total(
            before, "slipstream_runs_total", agent=agent, status="completed"
        )

    await until(counted)
    after = await scrape(system.http)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("slipstream_runs_total", agent=agent, status="completed") == 1
    assert grew("slipstream_run_duration_seconds_count", agent=agent, status="completed") == 1
    assert grew("slipstream_time_to_first_token_seconds_count", agent=agent) == 1
    usage = view["usage"]["total"]
    assert (
        grew("slipstream_model_tokens_total", agent=agent, direction="input")
        == (usage["input_tokens"])
    )
    assert (
        grew("slipstream_model_tokens_total", agent=agent, direction="output")
        == (usage["output_tokens"])
    )
    assert usage["output_tokens"] > 0
    # The scripted reply streams as several deltas, each timed once on its way to the socket.
    assert grew("slipstream_delta_delivery_seconds_count") >= 1
    # A short local run: its first text well within the histogram's upper buckets.
    assert grew("slipstream_time_to_first_token_seconds_bucket", agent=agent, le="10.0") == 1
    # The socket closed: the gauge is back where it was.
    await until(lambda: _sockets_back(system, total(before, "slipstream_open_sockets")), within=5)
    # No label carries a thread, a run or the message's text.
    text = (await system.http.get("/metrics")).text
    assert thread_id not in text and sent["run_id"] not in text and "hello metrics" not in text


async def _sockets_back(system: System, expected: float) -> bool:
    return total(await scrape(system.http), "slipstream_open_sockets") == expected


async def test_refusals_are_counted_by_reason(system: System) -> None:
    before = await scrape(system.http)
    assert (await system.http.get("/api/threads/tmissing0000000")).status_code == 404
    assert (await system.http.post("/api/threads", json={"title": 5})).status_code == 422
    big = await system.http.post("/api/threads", content=b"x" * (70 * 1024))
    assert big.status_code == 413
    stranger = await system.http.get("/api/threads", headers={"Host": "attacker.example"})
    assert stranger.status_code == 400
    with pytest.raises(InvalidStatus):
        async with connect(
            system.ws_url("tmissing0000000"), origin=Origin("https://attacker.example")
        ):
            pass
    after = await scrape(system.http)
    for reason in ("not_found", "invalid", "too_large", "host", "origin"):
        grew = total(after, "slipstream_rejected_requests_total", reason=reason) - total(
            before, "slipstream_rejected_requests_total", reason=reason
        )
        assert grew == 1, reason


async def test_a_run_cancelled_before_a_worker_took_it_is_counted_once(
    real_backend: Backend, settings: Settings
) -> None:
    """No worker ends it, so the web process that cancelled it counts it; a resend, not."""
    async with running_system(real_backend, settings, workers=False) as system:
        before = await scrape(system.http)
        thread_id = await system.new_thread()
        run_id = (await system.send(thread_id, "never started"))["run_id"]
        for _ in range(2):  # the second is a resend of the same command
            cancelled = await system.http.post(
                f"/api/runs/{run_id}/cancel", json={"client_id": "c-metrics-1"}
            )
            assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        agent = (await system.view(thread_id))["runs"][run_id]["agent"]
        after = await scrape(system.http)
    for name in ("slipstream_runs_total", "slipstream_run_duration_seconds_count"):
        grew = total(after, name, agent=agent, status="cancelled") - total(
            before, name, agent=agent, status="cancelled"
        )
        assert grew == 1, name


async def test_lag_and_pending_follow_queued_and_taken_work(
    served_backend: Backend, settings: Settings
) -> None:
    """Work queued with no worker is lag; taken and not finished, pending; on a cluster too."""
    partitions = Keyspace(settings.partitions).all()
    async with running_system(served_backend, settings, workers=False) as system:
        thread_id = await system.new_thread()
        await system.send(thread_id, "queued with nobody to run it")
    part = Keyspace(settings.partitions).partition(thread_id)
    label = part.tag.strip("{}")
    lag = GroupLag(
        served_backend, partitions, WORKERS_GROUP, lambda p: p.work, deleted_when_done=True
    )
    client = served_backend.client
    try:
        await client.xgroup_create(part.work, WORKERS_GROUP, id="0", mkstream=True)
    except Exception as exc:  # a worker of an earlier start made it already
        assert "BUSYGROUP" in str(exc)
    await lag.refresh()
    assert _gauges(WORKERS_GROUP, label) == (1, 0)
    await client.xreadgroup(WORKERS_GROUP, "a-worker", {part.work: ">"}, count=10)
    await lag.refresh()
    assert _gauges(WORKERS_GROUP, label) == (0, 1)
    # The projectors' group on the feeds: nothing folded yet, so its events wait there.
    feeds = GroupLag(served_backend, partitions, PROJECTORS_GROUP, lambda p: p.feed)
    try:
        await client.xgroup_create(part.feed, PROJECTORS_GROUP, id="0", mkstream=True)
    except Exception as exc:
        assert "BUSYGROUP" in str(exc)
    await feeds.refresh()
    assert _gauges(PROJECTORS_GROUP, label)[0] >= 2


def _gauges(group: str, partition: str) -> tuple[float, float]:
    """This process's lag and pending of `group` on `partition`, as a scrape shows them."""
    samples = parse(metrics.scrape().decode())
    labels = {"group": group, "partition": partition}
    return (
        total(samples, "slipstream_consumer_group_lag", **labels),
        total(samples, "slipstream_consumer_group_pending", **labels),
    )


async def test_the_embedded_worker_reports_its_group(system: System) -> None:
    """In one process the worker's lag loop runs beside the web role, which serves it."""

    async def reported() -> bool:
        samples = await scrape(system.http)
        return any(
            name == "slipstream_consumer_group_pending" and ("group", WORKERS_GROUP) in labels
            for name, labels in samples
        )

    await until(reported, within=15)


def _scrape_port(port: int) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert response.status_code == 200
    return parse(response.text)


def _answers(port: int) -> bool:
    try:
        _scrape_port(port)
    except httpx.TransportError:
        return False
    return True


def test_a_worker_process_serves_its_own(redis_url: str, tmp_path: Path) -> None:
    web_port, metrics_port = free_port(), free_port()
    env = env_for(PORT=str(web_port), REDIS_URL=redis_url)
    base = f"http://127.0.0.1:{web_port}"
    with processes() as running:
        web = spawn("service", env, tmp_path / "web.log")
        worker_env = {**env, "SLIPSTREAM_METRICS_PORT": str(metrics_port)}
        worker = spawn("consumers", worker_env, tmp_path / "worker.log")
        running += [web, worker, spawn("projections", env, tmp_path / "projector.log")]
        wait_healthy(web_port, web)
        thread_id, run_id = chat(base, "counted by the worker")
        view = wait_for_status(base, thread_id, run_id, {"completed"})
        agent = view["runs"][run_id]["agent"]
        assert _answers(metrics_port)
        samples = _scrape_port(metrics_port)
        assert total(samples, "slipstream_runs_total", agent=agent, status="completed") == 1
        assert total(samples, "slipstream_model_tokens_total", direction="output") > 0
        assert total(samples, "slipstream_time_to_first_token_seconds_count") == 1
        assert total(samples, "process_resident_memory_bytes") > 0
        # A second worker on the same port stops at once, with one line saying why.
        second = spawn("consumers", worker_env, tmp_path / "second.log")
        assert exits_within(second, 20) == 1
        said = (tmp_path / "second.log").read_text()
        assert f"worker: cannot serve metrics on 127.0.0.1:{metrics_port}: address" in said
        assert "Traceback" not in said
        # The web process has its own, and the worker's runs are not in it.
        web_samples = parse(httpx.get(f"{base}/metrics").text)
        assert total(web_samples, "slipstream_runs_total") == 0


def test_web_processes_sum_through_the_multiprocess_dir(redis_url: str, tmp_path: Path) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    ports = [free_port(), free_port()]
    with processes() as running:
        for i, port in enumerate(ports):
            env = env_for(PORT=str(port), REDIS_URL=redis_url, PROMETHEUS_MULTIPROC_DIR=str(shared))
            running.append(spawn("service", env, tmp_path / f"web{i}.log"))
        for port, process in zip(ports, running, strict=True):
            wait_healthy(port, process)
            missing = httpx.get(f"http://127.0.0.1:{port}/api/threads/tnothere00000000")
            assert missing.status_code == 404
        assert any(shared.iterdir())  # each process writes its values there
        for port in ports:  # either process answers for both
            samples = parse(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
            assert total(samples, "slipstream_rejected_requests_total", reason="not_found") == 2
    for process in running:
        assert process.returncode == 0


def test_a_bad_metrics_port_is_a_configuration_error(redis_url: str, tmp_path: Path) -> None:
    env = env_for(REDIS_URL=redis_url, SLIPSTREAM_METRICS_PORT="http")
    worker = spawn("projections", env, tmp_path / "projector.log")
    try:
        assert exits_within(worker, 20) == 1
    finally:
        if worker.poll() is None:
            worker.kill()
    said = (tmp_path / "projector.log").read_text()
    assert "configuration error: SLIPSTREAM_METRICS_PORT='http' is not a whole number" in said


def test_names_and_labels_are_the_documented_ones() -> None:
    """Every series the README's table lists is defined, and none that it does not."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Metrics", 1)[1].split("\n### ", 1)[0]
    defined = {
        family.name
        for family in text_string_to_metric_families(metrics.scrape().decode())
        if family.name.startswith("slipstream_")
    }
    documented = {
        line.split("`")[1].removesuffix("_total")
        for line in section.splitlines()
        if line.startswith("| `slipstream_")
    }
    assert defined and documented == defined
