"""An automated accessibility check: axe-core (npm, pinned in package.json's
devDependencies) finds no serious or critical violation on the chat's main
views, in the light and the dark theme, under the page's own strict CSP.

axe goes in as an init script (Playwright hands it to the browser directly,
so the CSP, which forbids inline scripts, is not bypassed for the page), and
no violation of that CSP may be reported while it runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import screenshot
from tests.browser.test_csp import COLLECT_VIOLATIONS
from tests.processes import embedded_service

pytestmark = pytest.mark.slow

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
ASSISTANT = '[data-testid="message"][data-role="assistant"]'
ANSWER = """echo: Here is the sum, and the code that does it:

```python
def add(a, b):
    return a + b  # two numbers
```

[[tool calculator {"expression": "2+2"}]]"""
RUN_AXE = """async () => {
  const found = await axe.run(document, { resultTypes: ["violations"] });
  return found.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => [n.target.join(" "), n.failureSummary]),
    }));
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_service(
        tmp_path_factory.mktemp("accessibility"),
        SLIPSTREAM_SCRIPTED_DELAY_MS="5",
        SLIPSTREAM_SCRIPTED_WORDS="12",
    ) as (url, _env):
        yield url


def axe_context(browser: Browser, **options: Any) -> BrowserContext:
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: `make test` installs it (npm ci)")
    made = browser.new_context(viewport={"width": 1200, "height": 800}, **options)
    made.set_default_timeout(20_000)
    made.add_init_script(COLLECT_VIOLATIONS)
    made.add_init_script(path=str(AXE))
    return made


@pytest.fixture(params=["light", "dark"])
def page(request: pytest.FixtureRequest, browser: Browser) -> Iterator[Page]:
    context = axe_context(browser, color_scheme=request.param)
    opened = context.new_page()
    yield opened
    context.close()


def serious_violations(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate(RUN_AXE)
    assert page.evaluate("window.__violations") == [], "a CSP violation while axe ran"
    return found


def assert_accessible(page: Page, view: str) -> None:
    found = serious_violations(page)
    assert found == [], f"{view}: " + json.dumps(found, indent=2)


def answered_thread(server: str) -> str:
    """A thread whose answer has a highlighted code block and a finished tool call."""
    thread = str(httpx.post(f"{server}/api/threads", json={}, timeout=10).json()["id"])
    body = {"content": ANSWER, "agent": "researcher"}
    sent = httpx.post(f"{server}/api/threads/{thread}/messages", json=body, timeout=10)
    assert sent.status_code == 202, sent.text
    return thread


def test_the_empty_page_has_no_serious_violation(page: Page, server: str) -> None:
    page.goto(server)
    expect(page.get_by_test_id("connection-status")).to_have_text("live")
    assert_accessible(page, "empty state")


def test_an_answered_thread_and_the_inspector_have_no_serious_violation(
    page: Page, server: str
) -> None:
    page.goto(f"{server}/#{answered_thread(server)}")
    reply = page.locator(f'{ASSISTANT}[data-status="completed"]')
    expect(reply).to_be_visible(timeout=30_000)
    expect(reply.locator("code.hljs .hljs-keyword").first).to_be_visible()
    reply.locator('[data-testid="tool-call"] .tool__summary').click()
    expect(reply.get_by_test_id("tool-result")).to_have_text("4")
    assert_accessible(page, "a thread with an answer")
    page.get_by_test_id("inspector-toggle").click()
    expect(page.get_by_test_id("inspector-event").first).to_be_visible()
    assert_accessible(page, "the inspector open")
    dark = page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
    screenshot(page, f"answer-and-inspector-{'dark' if dark else 'light'}")


def test_the_phone_drawer_has_no_serious_violation(page: Page, server: str) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{server}/#{answered_thread(server)}")
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_be_visible(timeout=30_000)
    assert_accessible(page, "a thread on a phone")
    page.get_by_test_id("menu-button").click()
    expect(page.locator("#sidebar")).to_have_css("transform", "none")
    assert_accessible(page, "the phone drawer open")


def test_the_sign_in_page_has_no_serious_violation(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with embedded_service(tmp_path_factory.mktemp("a11y-sign-in"), SLIPSTREAM_AUTH="tokens") as (
        url,
        _env,
    ):
        context = axe_context(browser)
        page = context.new_page()
        page.goto(url)
        expect(page.get_by_test_id("sign-in-token")).to_be_focused()
        assert_accessible(page, "the sign-in page")
        context.close()
