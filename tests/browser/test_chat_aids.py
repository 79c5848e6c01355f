"""What helps a person find their way in the chat, in a real browser.

The model badge (the offline demo model says so), example prompts in an empty
thread, the @ list of agents, keyboard shortcuts and their help, and Send / Stop
while a run waits for a person. One server for the module, with the shipped agents
on the scripted model; every page is checked for CSP violations and errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, expect

from tests.browser.conftest import THREAD_URL, screenshot
from tests.browser.test_csp import COLLECT_VIOLATIONS
from tests.processes import embedded_service

pytestmark = pytest.mark.slow

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
USER = '[data-testid="message"][data-role="user"]'
# Loopback is refused by fetch_url's policy, and it waits for a person's yes first.
FETCH = '[[tool fetch_url {"url": "http://127.0.0.1:1/"}]]'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Answers of 60 words, 40 ms apart: long enough to see Stop while one is written."""
    with embedded_service(
        tmp_path_factory.mktemp("browser-aids"),
        SLIPSTREAM_SCRIPTED_DELAY_MS="40",
        SLIPSTREAM_SCRIPTED_WORDS="60",
    ) as (url, _env):
        yield url


@pytest.fixture
def page(context: BrowserContext, server: str) -> Iterator[Page]:
    """A fresh page with no thread open; afterwards, no CSP violation and no error."""
    context.add_init_script(COLLECT_VIOLATIONS)
    opened = context.new_page()
    complaints: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            complaints.append(message.text)

    opened.on("console", on_console)
    opened.on("pageerror", lambda error: complaints.append(str(error)))
    opened.goto(server)
    yield opened
    assert opened.evaluate("window.__violations") == []
    assert complaints == []


def agents_loaded(page: Page) -> None:
    """The page starts in a new conversation (its thread is made by its first message)."""
    expect(page.get_by_test_id("agent-select").locator('option[value="writer"]')).to_have_count(1)


def test_the_header_says_the_model_is_the_offline_demo_one(page: Page) -> None:
    badge = page.get_by_test_id("model-badge")
    expect(badge).to_have_text("offline demo model")
    expect(badge).to_have_attribute("title", re.compile("made up from your words"))
    hint = page.get_by_test_id("model-hint")
    expect(hint).to_be_hidden()
    badge.click()
    expect(badge).to_have_attribute("aria-expanded", "true")
    expect(hint).to_be_visible()
    expect(hint).to_contain_text("offline demo model")
    expect(hint).to_contain_text("ANTHROPIC_API_KEY")
    expect(hint).to_contain_text("SLIPSTREAM_LLM=anthropic")
    expect(hint).to_contain_text("restart")
    screenshot(page, "model-badge")
    badge.press("Escape")  # closes the hint, and stops nothing
    expect(hint).to_be_hidden()
    expect(badge).to_have_attribute("aria-expanded", "false")


def test_an_empty_thread_offers_examples_that_fill_the_composer(page: Page) -> None:
    suggestions = page.get_by_test_id("suggestions")
    expect(suggestions).to_be_visible()
    for agent in ("assistant", "researcher", "writer", "critic", "research", "approval"):
        expect(suggestions.locator(f'[data-agent="{agent}"]').first).to_be_visible()
    screenshot(page, "suggestions")
    # The researcher's calculator example: its label leaves the offline model's
    # directive out, the text it fills keeps it, and the picker turns to researcher.
    example = suggestions.locator('[data-agent="researcher"]', has_text="17.5%")
    expect(example).not_to_contain_text("[[tool")
    example.click()
    box = page.get_by_test_id("message-input")
    expect(box).to_have_value(re.compile(r"^What is 17\.5% of 2,480\? \[\[tool calculator "))
    expect(box).to_be_focused()
    expect(page.get_by_test_id("agent-select")).to_have_value("researcher")
    page.get_by_test_id("send-button").click()
    expect(page).to_have_url(THREAD_URL)
    expect(suggestions).to_be_hidden()  # the thread has a message now
    reply = page.locator(ASSISTANT).last
    expect(reply.locator(".message__author")).to_have_text("researcher")
    card = reply.locator('[data-testid="tool-call"][data-tool="calculator"]')
    expect(card).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(reply.locator(".content")).to_contain_text("calculator returned 434")
    # A new conversation is empty again: the examples come back.
    page.get_by_test_id("new-thread").click()
    expect(page.locator(USER)).to_have_count(0)
    expect(suggestions).to_be_visible()


def test_at_opens_a_list_of_agents_and_enter_picks_one(page: Page) -> None:
    agents_loaded(page)
    box = page.get_by_test_id("message-input")
    listbox = page.get_by_test_id("mention-list")
    expect(box).to_have_attribute("role", "combobox")
    expect(box).to_have_attribute("aria-expanded", "false")
    box.click()
    box.press_sequentially("@wr")
    expect(listbox).to_be_visible()
    expect(box).to_have_attribute("aria-expanded", "true")
    writer = listbox.locator('[role="option"][data-agent="writer"]')
    expect(writer).to_contain_text("@writer")
    expect(writer).to_contain_text("Drafts and revises texts")
    # Narrowed as typed: names starting with "wr" first; the first option is the active one.
    expect(listbox.get_by_role("option").first).to_have_attribute("data-agent", "writer")
    expect(writer).to_have_attribute("aria-selected", "true")
    expect(box).to_have_attribute("aria-activedescendant", "mention-option-writer")
    screenshot(page, "mention-list")
    box.press("Enter")  # picks; does not send
    expect(listbox).to_be_hidden()
    expect(box).to_have_value("@writer ")
    expect(box).to_have_attribute("aria-expanded", "false")
    expect(page.locator(USER)).to_have_count(0)
    # The picker follows the mention.
    expect(page.get_by_test_id("agent-select")).to_have_value("writer")
    box.press_sequentially("a note about streams")
    page.get_by_test_id("send-button").click()
    asked = page.locator(USER).last
    expect(asked.locator(".content")).to_have_text("a note about streams")
    reply = page.locator(ASSISTANT).last
    expect(reply.locator(".message__author")).to_have_text("writer")
    expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)


def test_the_agent_list_by_arrows_tab_escape_and_mouse(page: Page) -> None:
    agents_loaded(page)
    box = page.get_by_test_id("message-input")
    listbox = page.get_by_test_id("mention-list")
    picker = page.get_by_test_id("agent-select")
    box.click()
    box.press_sequentially("Ask @")
    options = listbox.get_by_role("option")
    expect(options.first).to_have_attribute("aria-selected", "true")
    first = options.first.get_attribute("data-agent")
    box.press("ArrowDown")
    second = options.nth(1)
    expect(second).to_have_attribute("aria-selected", "true")
    expect(box).to_have_attribute(
        "aria-activedescendant", f"mention-option-{second.get_attribute('data-agent')}"
    )
    box.press("ArrowUp")
    expect(listbox.locator(f'[data-agent="{first}"]')).to_have_attribute("aria-selected", "true")
    # Esc closes the list and leaves the text as it was.
    box.press("Escape")
    expect(listbox).to_be_hidden()
    expect(box).to_have_value("Ask @")
    # Typing on opens it again; a mention inside the text is one too. Tab picks.
    box.press_sequentially("cri")
    expect(listbox.locator('[data-agent="critic"]')).to_be_visible()
    box.press("Tab")
    expect(box).to_have_value("Ask @critic ")
    expect(box).to_be_focused()
    expect(picker).to_have_value("critic")
    # A click picks too; two mentions send to both, and the picker shows the first.
    box.press_sequentially("and @rev")
    listbox.locator('[data-agent="review"]').click()
    expect(box).to_have_value("Ask @critic and @review ")
    expect(box).to_be_focused()
    expect(picker).to_have_value("critic")
    expect(picker).to_have_attribute("title", "Goes to critic, review: the message mentions them")
    # No mention left: the picker is back on its own choice.
    box.fill("no one in particular")
    expect(picker).to_have_value("assistant")


def test_a_pick_by_hand_wins_over_a_mention(page: Page) -> None:
    agents_loaded(page)
    box = page.get_by_test_id("message-input")
    box.fill("what would @writer say about this")
    picker = page.get_by_test_id("agent-select")
    expect(picker).to_have_value("writer")
    picker.select_option("critic")
    page.get_by_test_id("send-button").click()
    reply = page.locator(ASSISTANT).last
    expect(reply.locator(".message__author")).to_have_text("critic")
    expect(page.locator(USER).last.locator(".content")).to_have_text(
        "what would @writer say about this"
    )
    expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)


def test_question_mark_opens_the_shortcuts_and_escape_closes_them(page: Page) -> None:
    dialog = page.get_by_test_id("shortcuts-dialog")
    page.get_by_test_id("inspector-toggle").focus()  # a button, not a text field
    page.keyboard.press("?")
    expect(dialog).to_be_visible()
    for keys, what in [
        ("Ctrl+Shift+O", "New thread"),
        ("Ctrl+K", "Search threads"),
        ("Shift+Esc", "Go to the message box"),
        ("?", "Show these shortcuts"),
    ]:
        expect(dialog).to_contain_text(f"{keys}{what}")
    expect(dialog.locator("kbd", has_text="Ctrl").first).to_be_visible()
    expect(dialog).not_to_contain_text("⌘")  # not a Mac
    screenshot(page, "shortcuts")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("inspector-toggle")).to_be_focused()  # back where it was
    # In the message box, "?" is just a character.
    box = page.get_by_test_id("message-input")
    box.click()
    page.keyboard.press("?")
    expect(box).to_have_value("?")
    expect(dialog).to_be_hidden()


def test_the_shortcuts_do_what_the_help_says(page: Page) -> None:
    page.get_by_test_id("message-input").fill("echo: the first thread")
    page.get_by_test_id("send-button").click()
    expect(page).to_have_url(THREAD_URL)
    expect(page.locator(USER)).to_have_count(1)
    first = page.url.split("#", 1)[1]
    # Ctrl+Shift+O: what New thread does, wherever focus is (here, the message box).
    page.get_by_test_id("message-input").click()
    page.keyboard.press("Control+Shift+O")
    expect(page).not_to_have_url(re.compile(f"#{first}$"))
    expect(page.locator(USER)).to_have_count(0)
    expect(page.get_by_test_id("thread-title")).not_to_have_text("echo: the first thread")
    # Shift+Esc: back to the message box.
    page.get_by_test_id("new-thread").focus()
    page.keyboard.press("Shift+Escape")
    expect(page.get_by_test_id("message-input")).to_be_focused()
    # Ctrl+K: the thread search. Until the sidebar has its box, the test gives it one.
    if page.get_by_test_id("thread-search").count() == 0:
        page.evaluate(
            """() => {
              const box = document.createElement("input");
              box.type = "search";
              box.setAttribute("aria-label", "Search threads");
              box.dataset.testid = "thread-search";
              document.getElementById("sidebar").prepend(box);
            }"""
        )
    page.keyboard.press("Control+K")
    expect(page.get_by_test_id("thread-search")).to_be_focused()


def test_a_run_waiting_for_a_person_shows_send_not_stop(page: Page) -> None:
    """The researcher's fetch_url waits for a yes: nothing is written, so no Stop."""
    agents_loaded(page)
    page.get_by_test_id("agent-select").select_option("researcher")
    box = page.get_by_test_id("message-input")
    box.fill(f"Read this page {FETCH}")
    page.get_by_test_id("send-button").click()
    card = page.locator(f'{ASSISTANT} [data-testid="tool-call"][data-tool="fetch_url"]').last
    expect(card).to_have_attribute("data-status", "waiting", timeout=30_000)
    expect(card.get_by_test_id("approve-button")).to_be_visible()
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    send = page.get_by_test_id("send-button")
    expect(send).to_be_visible()
    box.fill("Why do you need it?")
    expect(send).to_be_enabled()
    expect(send).to_have_attribute("aria-label", "Send message")  # not "Queue message"
    box.fill("")
    page.keyboard.press("Escape")  # no answer is being written: Esc ends nothing
    expect(card).to_have_attribute("data-status", "waiting")
    # Denied, the run writes its answer: now Stop is there, and then it goes.
    card.get_by_test_id("deny-button").click()
    expect(page.get_by_test_id("stop-button")).to_be_visible(timeout=30_000)
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(page.get_by_test_id("stop-button")).to_be_hidden()


def test_a_workflow_waiting_for_approval_shows_send_and_its_wait(page: Page) -> None:
    """The shipped `approval` workflow: Stop while it drafts, Send while it waits."""
    agents_loaded(page)
    page.get_by_test_id("agent-select").select_option("approval")
    page.get_by_test_id("message-input").fill("A release note for 2.1")
    page.get_by_test_id("send-button").click()
    expect(page.get_by_test_id("stop-button")).to_be_visible(timeout=30_000)  # drafting
    wait = page.get_by_test_id("workflow-wait")
    expect(wait).to_be_visible(timeout=30_000)
    expect(wait).to_contain_text("Waiting for your approval")
    expect(wait.get_by_test_id("approve-button")).to_be_visible()
    expect(wait.get_by_test_id("cancel-wait")).to_be_visible()  # ending it is asked for here
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    expect(page.get_by_test_id("send-button")).to_be_visible()
    screenshot(page, "workflow-waiting-send")
    wait.get_by_test_id("approve-button").click()
    expect(page.locator('[data-testid="workflow-result"]').last).to_be_attached(timeout=30_000)
    expect(page.get_by_test_id("stop-button")).to_be_hidden()


def test_a_sleeping_workflow_is_cancelled_from_its_panel_not_by_stop(page: Page) -> None:
    """The `reminder` sleeps for a minute: no Stop, no Esc; its panel's Cancel ends it."""
    agents_loaded(page)
    page.get_by_test_id("agent-select").select_option("reminder")
    page.get_by_test_id("message-input").fill("in 1 minute: stretch")
    page.get_by_test_id("send-button").click()
    wait = page.get_by_test_id("workflow-wait")
    expect(wait).to_have_attribute("data-waiting-for", "timer", timeout=30_000)
    expect(wait).to_contain_text("Sleeping")
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    page.keyboard.press("Escape")
    expect(wait).to_be_visible()
    wait.get_by_test_id("cancel-wait").click()
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-run-status", "cancelled", timeout=30_000)
    expect(wait).to_be_hidden()
