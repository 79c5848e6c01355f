"""The seed's demo in a real browser: two tabs, a streamed answer, stop, leave, reload."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from consumers.llm.scripted import scripted_reply
from tests.browser.conftest import THREAD_URL, WORDS, screenshot
from tests.browser.shown import shown

pytestmark = pytest.mark.slow

ASSISTANT = '[data-testid="message"][data-role="assistant"]'


def new_thread(page: Page) -> None:
    """A draft: nothing is saved until its first message is sent."""
    page.get_by_test_id("new-thread").click()
    expect(page.get_by_test_id("message-input")).to_be_focused()
    assert "#" not in page.url


def thread_url(page: Page) -> str:
    """The page's thread, once its first message has saved it."""
    expect(page).to_have_url(THREAD_URL)  # not wait_for_function: the CSP forbids its eval
    expect(page.get_by_test_id("connection-status")).to_have_text("live")
    return page.url


def send(page: Page, text: str) -> None:
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("send-button").click()


def answer(page: Page) -> str:
    return page.locator(f"{ASSISTANT} .content").last.inner_text()


def thread_id(url: str) -> str:
    return url.split("#", 1)[1]


def open_tab(context: BrowserContext, url: str) -> Page:
    tab = context.new_page()
    tab.goto(url)
    expect(tab.get_by_test_id("connection-status")).to_have_text("live")
    return tab


def test_two_tabs_see_the_same_answer_grow(page: Page, context: BrowserContext) -> None:
    new_thread(page)
    send(page, "What makes streams durable?")
    other = open_tab(context, thread_url(page))
    expect(page.locator('[data-testid="message"][data-role="user"]').last).to_contain_text(
        "What makes streams durable?"
    )
    for tab in (page, other):
        expect(tab.locator(f'{ASSISTANT}[data-status="streaming"]')).to_be_visible()
    screenshot(page, "streaming")
    reference = scripted_reply("What makes streams durable?", WORDS)
    for tab in (page, other):
        expect(tab.locator(f'{ASSISTANT}[data-status="completed"]')).to_be_visible(timeout=30_000)
    assert answer(page) == answer(other)
    assert " ".join(answer(page).split()) == shown(reference)
    screenshot(page, "completed")


def test_either_tab_stops_the_answer_for_both(
    page: Page, context: BrowserContext, server: str
) -> None:
    new_thread(page)
    send(page, "A long answer, please")
    url = thread_url(page)
    other = open_tab(context, url)
    expect(other.locator(f'{ASSISTANT}[data-status="streaming"]')).to_be_visible()
    expect(other.get_by_test_id("stop-button")).to_be_visible()
    other.get_by_test_id("stop-button").click()
    for tab in (other, page):
        expect(tab.locator(f'{ASSISTANT}[data-status="cancelled"]')).to_be_visible(timeout=1_000)
    view = httpx.get(f"{server}/api/threads/{thread_id(url)}").json()
    stopped = view["messages"][-1]["content"]
    assert 0 < len(stopped) < len(scripted_reply("A long answer, please", WORDS))
    for tab in (page, other):  # what each tab shows is where the server stopped
        expect(tab.locator(f"{ASSISTANT} .content").last).to_have_text(
            re.compile(re.escape(shown(stopped).split()[-1]) + r"\s*$")
        )
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    screenshot(other, "stopped")


def test_the_answer_completes_after_the_sender_leaves(page: Page, context: BrowserContext) -> None:
    new_thread(page)
    send(page, "Finish without me")
    url = thread_url(page)
    expect(page.locator(f'{ASSISTANT}[data-status="streaming"]')).to_be_visible()
    page.close()
    later = open_tab(context, url)
    expect(later.locator(f'{ASSISTANT}[data-status="completed"]')).to_be_visible(timeout=30_000)
    reference = scripted_reply("Finish without me", WORDS)
    assert " ".join(answer(later).split()) == shown(reference)


def test_a_reload_mid_stream_shows_each_sentence_once(page: Page) -> None:
    new_thread(page)
    words = " ".join(f"w{i}" for i in range(60))
    send(page, f"echo: {words} The unique closing sentence.")
    expect(page.locator(f'{ASSISTANT}[data-status="streaming"]')).to_be_visible()
    expect(page.locator(f"{ASSISTANT} .content").first).to_contain_text("w10")
    page.reload()
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_be_visible(timeout=30_000)
    text = page.locator('[data-testid="message"]').all_inner_texts()
    joined = "\n".join(text)
    assert joined.count("The unique closing sentence.") == 2  # the user's message and the answer
    assert answer(page).count("The unique closing sentence.") == 1
    assert answer(page).count("w30 ") == 1


def test_model_markup_renders_inert(page: Page) -> None:
    new_thread(page)
    send(
        page,
        'echo: Look <img src=x onerror="window.__pwned=1"> and '
        "[a link](javascript:window.__pwned=2) and <script>window.__pwned=3</script> done.",
    )
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_be_visible(timeout=30_000)
    assert page.evaluate("window.__pwned") is None
    reply = page.locator(ASSISTANT).last
    assert reply.locator("img[onerror]").count() == 0
    assert reply.locator("script").count() == 0
    hrefs = reply.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert not any(h and h.strip().lower().startswith("javascript:") for h in hrefs)
    screenshot(page, "inert")


def test_approving_a_waiting_workflow_from_the_page(page: Page) -> None:
    new_thread(page)
    page.get_by_test_id("agent-select").select_option("approval")
    send(page, "Announce the new release")
    expect(page.get_by_test_id("approve-button")).to_be_visible(timeout=30_000)
    screenshot(page, "waiting-approval")
    page.get_by_test_id("approve-button").click()
    expect(
        page.locator('[data-testid="workflow-step"][data-name="publish"][data-status="completed"]')
    ).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("approve-button")).to_have_count(0)
    screenshot(page, "approved")


def test_markdown_and_the_inspector(page: Page, server: str) -> None:
    new_thread(page)
    send(
        page,
        "echo: ## Plan\n\n- first\n- second\n\n```py\nprint('hi')\n```\n\nSee [docs](https://example.com).",
    )
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_be_visible(timeout=30_000)
    reply = page.locator(ASSISTANT).last
    expect(reply.locator("h2")).to_have_text("Plan")
    expect(reply.locator("li")).to_have_count(2)
    expect(reply.locator("pre code")).to_contain_text("print('hi')")
    expect(reply.locator("a[href='https://example.com']")).to_have_attribute(
        "rel", re.compile("noopener")
    )
    url = thread_url(page)
    page.get_by_test_id("inspector-toggle").click()
    view = httpx.get(f"{server}/api/threads/{thread_id(url)}").json()
    expect(page.get_by_test_id("inspector-stream-key")).to_have_text(view["stream_key"])
    expect(page.get_by_test_id("inspector-event")).to_have_count(view["version"])
    expect(page.get_by_test_id("inspector")).to_contain_text("message.completed")
    screenshot(page, "inspector")


def test_a_rename_shows_in_every_tab(page: Page, context: BrowserContext) -> None:
    new_thread(page)
    send(page, "echo: hello")
    other = open_tab(context, thread_url(page))
    page.get_by_test_id("rename-thread").click()
    page.get_by_test_id("title-input").fill("Renamed thread")
    page.get_by_test_id("title-input").press("Enter")
    expect(other.get_by_test_id("thread-title")).to_have_text("Renamed thread")
    expect(other.get_by_test_id("thread-list")).to_contain_text("Renamed thread")


def test_escape_stops_the_answer(page: Page) -> None:
    new_thread(page)
    send(page, "Stop me with the keyboard")
    expect(page.locator(f'{ASSISTANT}[data-status="streaming"]')).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator(f'{ASSISTANT}[data-status="cancelled"]')).to_be_visible(timeout=2_000)
