"""A worker dies mid-answer; the reader sees the answer finish without reloading."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, expect

from consumers.llm.scripted import scripted_reply
from tests.browser.conftest import THREAD_URL, screenshot
from tests.browser.shown import shown
from tests.ports import free_port
from tests.processes import env_for, processes, spawn, wait_healthy

pytestmark = pytest.mark.slow
WORDS = 80


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    port = free_port()
    env = env_for(
        REDIS_URL=redis_url,
        PORT=str(port),
        SLIPSTREAM_LEASE_MS="1000",
        SLIPSTREAM_SCRIPTED_DELAY_MS="50",
        SLIPSTREAM_SCRIPTED_WORDS=str(WORDS),
    )
    with processes() as running:
        web = spawn("service", env, tmp_path / "web.log")
        running += [web, spawn("projections", env, tmp_path / "projector.log")]
        wait_healthy(port, web)
        yield f"http://127.0.0.1:{port}", env, tmp_path


def test_a_killed_worker_is_replaced_and_the_page_keeps_up(
    context: BrowserContext, cluster: tuple[str, dict[str, str], Path]
) -> None:
    base, env, logs = cluster
    with processes() as workers:
        workers.append(spawn("consumers", env, logs / "worker1.log"))
        page = context.new_page()
        page.goto(base)
        page.get_by_test_id("new-thread").click()
        page.get_by_test_id("message-input").fill("Survive the crash")
        page.get_by_test_id("send-button").click()
        expect(page).to_have_url(THREAD_URL)  # not wait_for_function: the CSP forbids its eval
        thread = page.url.split("#", 1)[1]
        reply = page.locator('[data-testid="message"][data-role="assistant"]').last
        expect(reply).to_have_attribute("data-status", "streaming")
        # A few words in, then the worker dies.
        expect(reply.locator(".content")).to_have_text(re.compile(r"(\S+\s+){5}"))
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        workers.append(spawn("consumers", env, logs / "worker2.log"))
        expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
        expect(page.get_by_test_id("connection-status")).to_have_text("live")
        screenshot(page, "after-worker-failure")
    seen = " ".join(reply.locator(".content").inner_text().split())
    assert seen == shown(scripted_reply("Survive the crash", WORDS))
    run = next(iter(httpx.get(f"{base}/api/threads/{thread}").json()["runs"].values()))
    assert run["attempt"] == 2
