"""A real server and Debian's Chromium, driven through Playwright."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.processes import embedded_service

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "screenshots"
WORDS = 120
THREAD_URL = re.compile(r"#.{3,}$")
"""A page showing a thread (its id after the #)."""
USER = '[data-testid="message"][data-role="user"]'
ASSISTANT = '[data-testid="message"][data-role="assistant"]'


def ask(page: Page, text: str) -> None:
    """Send `text` from the composer and wait for its answer to complete."""
    answers = page.locator(f'{ASSISTANT}[data-status="completed"]').count()
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("send-button").click()
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_have_count(
        answers + 1, timeout=30_000
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded system, answering slowly enough to act mid-answer."""
    with embedded_service(
        tmp_path_factory.mktemp("browser"),
        SLIPSTREAM_SCRIPTED_DELAY_MS="50",
        SLIPSTREAM_SCRIPTED_WORDS=str(WORDS),
    ) as (url, _env):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 1200, "height": 800})
    made.set_default_timeout(20_000)
    yield made
    made.close()


@pytest.fixture
def page(context: BrowserContext, server: str) -> Page:
    opened = context.new_page()
    opened.goto(server)
    return opened


def screenshot(page: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def have_chromium() -> bool:
    return shutil.which("chromium") is not None
