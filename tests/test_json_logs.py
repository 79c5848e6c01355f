"""SLIPSTREAM_LOG_FORMAT=json: one JSON object per line, and a run's lines name the run."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from consumers.worker import Worker
from service import commands
from slipstream import logs
from slipstream.config import Settings
from slipstream.errors import ProviderError
from slipstream.store import EventStore
from tests.fake_llm import FlakyLLM
from tests.processes import env_for, exits_within, processes, spawn, wait_for_log


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the root logger writes, as the json format writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.RunIds())
    handler.setFormatter(logs.JsonLines("worker"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def records(out: io.StringIO) -> list[dict[str, str]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_is_one_object_with_the_run_only_inside_it(json_lines: io.StringIO) -> None:
    log = logging.getLogger("slipstream.test")
    log.info("outside")
    with logs.run_context(thread="t1", run="t1.ab", attempt=2, worker="w:1:x"):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("inside %s", "a run")
    outside, inside = records(json_lines)
    assert (outside["message"], outside["role"], outside["level"]) == ("outside", "worker", "INFO")
    assert "run" not in outside
    assert inside["message"] == "inside a run"
    assert (inside["thread"], inside["run"], inside["attempt"], inside["worker"]) == (
        "t1",
        "t1.ab",
        "2",
        "w:1:x",
    )
    assert "ValueError: boom" in inside["exception"]


async def test_every_line_of_a_run_names_its_thread_run_attempt_and_worker(
    store: EventStore, settings: Settings, json_lines: io.StringIO
) -> None:
    thread_id, _ = await commands.create_thread(store)
    sent = await commands.send_message(store, thread_id, "hello", "assistant")
    quick = dataclasses.replace(settings, retry_base_ms=1, retry_max_ms=1)
    # The first call fails (a warning and a retry, logged by the runner), the second answers.
    llm = FlakyLLM([ProviderError("overloaded", retryable=True)])
    worker = Worker(store.backend, store, llm, quick, name="w:1:json")
    await worker.run_once()
    mine = [r for r in records(json_lines) if r["message"].startswith(f"run {sent.run_id}")]
    assert len(mine) >= 2, mine  # the model error's warning and the retry's line
    for record in mine:
        assert (record["thread"], record["run"], record["worker"]) == (
            thread_id,
            sent.run_id,
            "w:1:json",
        ), record
    assert {r["attempt"] for r in mine} == {"1"}


def test_a_worker_process_logs_json_lines(redis_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = env_for(REDIS_URL=redis_url, SLIPSTREAM_LOG_FORMAT="json")
    with processes() as started:
        worker = spawn("consumers", env, log)
        started.append(worker)
        wait_for_log(log, "taking work", worker)
    lines = [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    taking = [line for line in lines if "taking work" in line["message"]]
    assert taking and taking[0]["role"] == "worker" and taking[0]["logger"] == "slipstream.worker"


def test_an_unknown_log_format_stops_the_process_with_one_line(
    redis_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = spawn("consumers", env_for(REDIS_URL=redis_url, SLIPSTREAM_LOG_FORMAT="xml"), log)
    assert exits_within(worker, 20) != 0
    assert "SLIPSTREAM_LOG_FORMAT='xml' is not a log format" in log.read_text()
