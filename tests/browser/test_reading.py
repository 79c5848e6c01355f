"""What an answer shows, made readable: highlighted code, tool calls and results
as key/value lists with their JSON a click away, and failures in plain words.

Threads are started through the API (the composer is not what is tested here)
and then opened in the page, with no CSP violation along the way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import screenshot
from tests.browser.test_csp import COLLECT_VIOLATIONS

pytestmark = pytest.mark.slow

ASSISTANT = '[data-testid="message"][data-role="assistant"]'


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
