"""What a person does with messages: a draft thread, copy, edit and resend with the
version pager, and an answer's details."""

from __future__ import annotations

import httpx
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import ASSISTANT, THREAD_URL, USER, WORDS, ask, screenshot


def threads(server: str) -> list[str]:
    return [t["id"] for t in httpx.get(f"{server}/api/threads", timeout=10).json()]


def test_a_new_thread_is_a_draft_until_its_first_message(page: Page, server: str) -> None:
    before = threads(server)
    page.get_by_test_id("new-thread").click()
    expect(page.get_by_test_id("message-input")).to_be_focused()
    page.get_by_test_id("new-thread").click()  # twice: still one draft, nothing saved
    assert threads(server) == before
    assert "#" not in page.url
    ask(page, "echo: first words")
    expect(page).to_have_url(THREAD_URL)
    thread_id = page.url.split("#", 1)[1]
    assert threads(server) == [thread_id, *before]
    expect(
        page.get_by_test_id("thread-list").locator(f'li[data-thread-id="{thread_id}"]')
    ).to_have_count(1)


def test_edit_and_resend_keeps_the_earlier_version_a_page_away(page: Page, server: str) -> None:
    page.get_by_test_id("new-thread").click()
    ask(page, "What is a stream?")
    ask(page, "And a consumer group?")
    second = page.locator(USER).last
    second.hover()
    second.get_by_role("button", name="Edit and resend this message").click()
    editor = second.get_by_test_id("edit-input")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("And a consumer group?")
    editor.fill("And what is a consumer group for?")
    editor.press("Enter")

    # The new version takes the old one's place, with its own answer; the pager says 2 of 2.
    edited = page.locator(USER).last
    expect(edited.locator(".content")).to_have_text("And what is a consumer group for?")
    expect(page.locator(USER)).to_have_count(2)
    pager = edited.get_by_role("group", name="Version 2 of 2")
    expect(pager).to_be_visible()  # the server has it: its answer is the last one now
    expect(page.locator(ASSISTANT)).to_have_count(2)
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(reply.locator(".content")).to_contain_text("And what is a consumer group for?")
    screenshot(page, "edited-message")

    # Back to the first version: its own answer comes back with it.
    pager.get_by_role("button", name="Previous version").click()
    expect(page.locator(USER).last.locator(".content")).to_have_text("And a consumer group?")
    expect(page.locator(USER).last.get_by_role("group", name="Version 1 of 2")).to_be_visible()
    expect(page.locator(ASSISTANT)).to_have_count(2)
    first_answer = page.locator(ASSISTANT).last.locator(".content")
    expect(first_answer).to_contain_text("And a consumer group?")
    expect(first_answer).not_to_contain_text("for?")

    # The server kept both: the edit names the message it revises, both follow the first.
    thread_id = page.url.split("#", 1)[1]
    view = httpx.get(f"{server}/api/threads/{thread_id}", timeout=10).json()
    users = [m for m in view["messages"] if m["role"] == "user"]
    assert [m["content"] for m in users] == [
        "What is a stream?",
        "And a consumer group?",
        "And what is a consumer group for?",
    ]
    assert users[2]["edit_of"] == users[1]["id"]
    assert users[1]["parent_id"] == users[2]["parent_id"] == users[0]["id"]


def test_esc_cancels_an_edit_and_sends_nothing(page: Page, server: str) -> None:
    page.get_by_test_id("new-thread").click()
    ask(page, "echo: keep me")
    asked = page.locator(USER).last
    asked.hover()
    asked.get_by_role("button", name="Edit and resend this message").click()
    asked.get_by_test_id("edit-input").fill("changed my mind")
    asked.get_by_test_id("edit-input").press("Escape")
    expect(asked.get_by_test_id("edit-input")).to_be_hidden()
    expect(asked.locator(".content")).to_have_text("echo: keep me")
    expect(asked.get_by_role("button", name="Edit and resend this message")).to_be_focused()
    thread_id = page.url.split("#", 1)[1]
    view = httpx.get(f"{server}/api/threads/{thread_id}", timeout=10).json()
    assert [m["content"] for m in view["messages"] if m["role"] == "user"] == ["echo: keep me"]


def test_copy_works_on_every_message(page: Page, context: BrowserContext) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_test_id("new-thread").click()
    ask(page, "echo: copied **answer**")
    asked = page.locator(USER).last
    asked.hover()
    asked.get_by_role("button", name="Copy your message").click()
    assert page.evaluate("navigator.clipboard.readText()") == "echo: copied **answer**"
    page.locator(ASSISTANT).last.get_by_role("button", name="Copy the answer as markdown").click()
    assert page.evaluate("navigator.clipboard.readText()") == "copied **answer**"


def test_an_answer_shows_its_model_tokens_and_times_on_demand(page: Page) -> None:
    page.get_by_test_id("new-thread").click()
    ask(page, "How long does this take?")
    reply = page.locator(ASSISTANT).last
    expect(reply.get_by_test_id("answer-model")).to_have_text("offline demo model")
    details = reply.get_by_test_id("answer-details")
    expect(details).to_be_hidden()
    reply.get_by_test_id("answer-details-toggle").click()
    expect(details).to_be_visible()
    text = details.inner_text()
    for term in ("Agent", "Model", "Tokens in", "Tokens out", "First token after", "Total time"):
        assert term in text, text
    expect(details).to_contain_text("scripted (offline demo model)")
    expect(details).to_contain_text(str(WORDS))  # tokens out: the words written
    screenshot(page, "answer-details")
    reply.get_by_test_id("answer-details-toggle").click()
    expect(details).to_be_hidden()


def test_enter_on_an_edits_cancel_button_cancels(page: Page, server: str) -> None:
    page.get_by_test_id("new-thread").click()
    ask(page, "echo: leave me be")
    asked = page.locator(USER).last
    asked.hover()
    asked.get_by_role("button", name="Edit and resend this message").click()
    asked.get_by_test_id("edit-input").fill("echo: changed")
    cancel = asked.get_by_role("button", name="Cancel")
    cancel.focus()
    page.keyboard.press("Enter")
    expect(asked.get_by_test_id("edit-input")).to_be_hidden()
    expect(asked.locator(".content")).to_have_text("echo: leave me be")
    thread_id = page.url.split("#", 1)[1]
    view = httpx.get(f"{server}/api/threads/{thread_id}", timeout=10).json()
    assert [m["content"] for m in view["messages"] if m["role"] == "user"] == ["echo: leave me be"]


def test_messages_sent_on_an_earlier_branch_follow_each_other(page: Page, server: str) -> None:
    """Paged back to the first version, two quick messages go on from it, one after the
    other: neither becomes a version of the other."""
    page.get_by_test_id("new-thread").click()
    ask(page, "echo: start")
    ask(page, "echo: first try")
    asked = page.locator(USER).last
    asked.hover()
    asked.get_by_role("button", name="Edit and resend this message").click()
    asked.get_by_test_id("edit-input").fill("echo: second try")
    asked.get_by_test_id("edit-input").press("Enter")
    expect(page.locator(USER).last.get_by_role("group", name="Version 2 of 2")).to_be_visible()
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_have_count(2, timeout=30_000)
    page.locator(USER).last.get_by_role("button", name="Previous version").click()
    expect(page.locator(USER).last.locator(".content")).to_have_text("echo: first try")

    box = page.get_by_test_id("message-input")
    box.fill("echo: then this")
    box.press("Enter")
    box.fill("echo: and this")
    box.press("Enter")
    expect(page.locator(USER)).to_have_count(4)
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_have_count(4, timeout=30_000)
    shown = [text.strip() for text in page.locator(f"{USER} .content").all_inner_texts()]
    assert shown == ["echo: start", "echo: first try", "echo: then this", "echo: and this"]

    thread_id = page.url.split("#", 1)[1]
    view = httpx.get(f"{server}/api/threads/{thread_id}", timeout=10).json()
    users = {m["content"]: m for m in view["messages"] if m["role"] == "user"}
    assert users["echo: then this"]["parent_id"] == users["echo: first try"]["id"]
    assert users["echo: and this"]["parent_id"] == users["echo: then this"]["id"]


def test_an_edit_stops_an_answer_that_waits_for_approval(page: Page) -> None:
    """The old version's answer waits for a yes that is no longer shown: the edit stops it,
    so the new version is answered at once rather than queued behind it."""
    page.get_by_test_id("new-thread").click()
    page.get_by_test_id("agent-select").select_option("researcher")
    page.get_by_test_id("message-input").fill(
        'read it [[tool fetch_url {"url": "https://example.invalid/"}]]'
    )
    page.get_by_test_id("send-button").click()
    expect(page.get_by_test_id("approve-button")).to_be_visible(timeout=30_000)
    asked = page.locator(USER).last
    asked.hover()
    asked.get_by_role("button", name="Edit and resend this message").click()
    asked.get_by_test_id("edit-input").fill("echo: never mind")
    asked.get_by_test_id("edit-input").press("Enter")
    reply = page.locator(ASSISTANT).last
    expect(page.locator(USER).last.get_by_role("group", name="Version 2 of 2")).to_be_visible()
    expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(reply.locator(".content")).to_have_text("never mind")
    page.locator(USER).last.get_by_role("button", name="Previous version").click()
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "cancelled")
