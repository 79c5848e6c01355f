"""What an answer shows, made readable: highlighted code, tool calls and results
as key/value lists with their JSON a click away, and failures in plain words.

Threads are started through the API (the composer is not what is tested here)
and then opened in the page, with no CSP violation along the way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import screenshot
from tests.browser.test_csp import COLLECT_VIOLATIONS
from tests.ports import free_port
from tests.processes import embedded_service

pytestmark = pytest.mark.slow

ASSISTANT = '[data-testid="message"][data-role="assistant"]'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded system with short, quick answers: what is read here is not the stream."""
    with embedded_service(
        tmp_path_factory.mktemp("reading"),
        SLIPSTREAM_SCRIPTED_DELAY_MS="10",
        SLIPSTREAM_SCRIPTED_WORDS="12",
    ) as (url, _env):
        yield url


def ask(server: str, content: str, agent: str | None = None) -> str:
    """A new thread with `content` sent in it (to `agent`, or as the router decides): its id."""
    thread = httpx.post(f"{server}/api/threads", json={}, timeout=10).json()["id"]
    body: dict[str, str] = {"content": content}
    if agent:
        body["agent"] = agent
    sent = httpx.post(f"{server}/api/threads/{thread}/messages", json=body, timeout=10)
    assert sent.status_code == 202, sent.text
    return str(thread)


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page that records CSP violations from its first script on; none may happen."""
    context.add_init_script(COLLECT_VIOLATIONS)
    opened = context.new_page()
    yield opened
    assert opened.evaluate("window.__violations") == []


def open_thread(page: Page, server: str, thread: str) -> None:
    page.goto(f"{server}/#{thread}")
    expect(page.get_by_test_id("connection-status")).to_have_text("live")


CODE = """echo: Two blocks:

```python
def total(xs):
    return sum(xs)  # all of them
```

```
plain <b>text</b>
```
"""


def test_a_fenced_block_with_a_language_is_highlighted(page: Page, server: str) -> None:
    open_thread(page, server, ask(server, CODE))
    reply = page.locator(f'{ASSISTANT}[data-status="completed"]')
    expect(reply).to_be_visible(timeout=30_000)
    python = reply.locator("pre code.language-python")
    expect(python.locator("span.hljs-keyword").first).to_have_text("def")
    expect(python.locator("span.hljs-comment")).to_have_text("# all of them")
    expect(python).to_have_text("def total(xs):\n    return sum(xs)  # all of them\n")
    # The keyword has its own colour, not the text's.
    colours = python.evaluate(
        "code => [code.querySelector('.hljs-keyword'), code].map(e => getComputedStyle(e).color)"
    )
    assert colours[0] != colours[1]
    # A fence without a language stays plain, its markup shown as text.
    plain = reply.locator("pre code:not(.hljs)")
    expect(plain).to_have_text("plain <b>text</b>\n")
    assert plain.locator("span, b").count() == 0
    screenshot(page, "code-highlighted")


TOOLS = (
    'find it [[tool calculator {"expression": "2+2"}]] '
    '[[tool search_thread {"query": "zebra"}]] zebra'
)


def test_tool_arguments_and_results_read_as_lists_with_the_json_behind_a_toggle(
    page: Page, server: str
) -> None:
    thread = ask(server, TOOLS, agent="researcher")
    open_thread(page, server, thread)
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_be_visible(timeout=30_000)
    search = page.locator('[data-testid="tool-call"][data-tool="search_thread"]')
    search.locator(".tool__summary").click()
    args = search.get_by_test_id("tool-args")
    expect(args.locator("dt")).to_have_text(["query"])
    expect(args.locator("dd")).to_have_text(["zebra"])
    # A list of objects: one item, its fields as name → value, indented under the list.
    result = search.get_by_test_id("tool-result")
    found = result.locator("ol.value--list > li > dl.value--object")
    expect(found).to_have_count(1)
    expect(found.locator("dt")).to_contain_text(["id", "role", "agent", "created_at", "excerpt"])
    expect(found.locator("dt:text-is('role') + dd")).to_have_text("user")
    expect(found.locator("dt:text-is('excerpt') + dd")).to_contain_text("zebra")
    # The raw JSON, whole, one click away; and back.
    toggle = search.get_by_test_id("tool-result-toggle")
    expect(toggle).to_have_text("Show JSON")
    expect(search.get_by_test_id("tool-result-json")).to_be_hidden()
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(result).to_be_hidden()
    shown = json.loads(search.get_by_test_id("tool-result-json").inner_text())
    view = httpx.get(f"{server}/api/threads/{thread}", timeout=10).json()
    call = next(
        call
        for run in view["runs"].values()
        for call in run["tools"]
        if call["tool"] == "search_thread"
    )
    assert shown == call["result"]
    screenshot(page, "tool-result-json")
    toggle.click()
    expect(result).to_be_visible()
    # A number is its own JSON: no toggle.
    calculator = page.locator('[data-testid="tool-call"][data-tool="calculator"]')
    calculator.locator(".tool__summary").click()
    expect(calculator.get_by_test_id("tool-result")).to_have_text("4")
    expect(calculator.get_by_test_id("tool-result-toggle")).to_be_hidden()
    search.scroll_into_view_if_needed()
    screenshot(page, "tool-result-list")


def test_an_approval_timeline_says_declined_and_approved(page: Page, server: str) -> None:
    open_thread(page, server, ask(server, "A note about Friday", agent="approval"))
    page.get_by_test_id("feedback-input").fill("shorter please")
    page.get_by_test_id("reject-button").click()
    waits = page.locator('[data-testid="workflow-step"][data-kind="wait"]')
    expect(waits.first).to_contain_text("Declined — “shorter please”", timeout=30_000)
    page.get_by_test_id("approve-button").click()
    expect(waits).to_have_count(2, timeout=30_000)
    expect(waits.nth(1)).to_contain_text("Approved", timeout=30_000)
    expect(page.get_by_test_id("workflow-steps")).not_to_contain_text("approved")  # no raw JSON
    # The workflow's result, and its publish step's, as lists.
    page.get_by_test_id("workflow-result").locator("summary").click()
    outcome = page.get_by_test_id("workflow-result-value")
    expect(outcome.locator("dt:text-is('status') + dd")).to_have_text("published")
    expect(outcome.locator("dt:text-is('revisions') + dd")).to_have_text("1")
    publish = page.locator('[data-testid="workflow-step"][data-name="publish"]')
    publish.locator(".step__result-summary").click()
    expect(
        publish.get_by_test_id("step-result").locator("dt:text-is('published') + dd")
    ).to_have_text("true")
    screenshot(page, "approval-timeline")


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The system with the Anthropic provider pointed at a port nobody listens on."""
    workdir: Path = tmp_path_factory.mktemp("unreachable")
    with embedded_service(
        workdir,
        SLIPSTREAM_LLM="anthropic",
        ANTHROPIC_API_KEY="sk-test-not-a-key",
        ANTHROPIC_BASE_URL=f"http://127.0.0.1:{free_port()}",
        SLIPSTREAM_ANTHROPIC_MAX_RETRIES="0",
        SLIPSTREAM_MAX_ATTEMPTS="2",
        SLIPSTREAM_RETRY_BASE_MS="20",
        SLIPSTREAM_RETRY_MAX_MS="50",
    ) as (url, _env):
        yield url


def test_a_failed_answer_says_why_in_plain_words_with_the_reason_behind_details(
    page: Page, unreachable: str
) -> None:
    thread = ask(unreachable, "Hello?")
    open_thread(page, unreachable, thread)
    reply = page.locator(f'{ASSISTANT}[data-status="failed"]')
    expect(reply).to_be_visible(timeout=30_000)
    note = reply.locator(".message__note")
    expect(note.locator(".failure__text")).to_have_text("Couldn't reach the model.")
    detail = note.locator(".failure__detail")
    expect(detail).to_be_hidden()
    note.get_by_text("Details").click()
    reason = httpx.get(f"{unreachable}/api/threads/{thread}", timeout=10).json()
    (run,) = reason["runs"].values()
    expect(detail).to_have_text(run["reason"])
    assert "gave up after 2 attempts" in run["reason"]
    screenshot(page, "failure-explained")
