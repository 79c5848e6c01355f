"""Finding and removing threads: search over titles and message text, and delete."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import ASSISTANT, THREAD_URL, USER, ask, screenshot


def test_search_finds_a_message_deep_in_an_old_thread(page: Page, server: str) -> None:
    # An old thread whose third answer holds the word; then a newer thread on top of it.
    page.get_by_test_id("new-thread").click()
    ask(page, "echo: first note")
    ask(page, "echo: second note")
    ask(page, "echo: the third note mentions a zeppelin over the harbour")
    expect(page).to_have_url(THREAD_URL)
    old = page.url.split("#", 1)[1]
    page.get_by_test_id("new-thread").click()
    ask(page, "echo: something newer")

    page.keyboard.press("Control+k")  # the shortcut to search
    search = page.get_by_test_id("thread-search")
    expect(search).to_be_focused()
    search.fill("zeppelin")
    results = page.get_by_test_id("thread-list").locator("li")
    expect(results).to_have_count(1)
    hit = results.first
    expect(hit).to_have_attribute("data-thread-id", old)
    expect(hit).to_contain_text("zeppelin")  # the words around the match
    screenshot(page, "search")
    hit.locator("a").click()
    expect(page).to_have_url(f"{server}/#{old}")
    found = page.locator(".message--found")
    expect(found).to_have_count(1)
    expect(found).to_contain_text("zeppelin")
    expect(found).to_be_in_viewport()

    # Esc clears the search: the whole list is back.
    search.focus()
    search.press("Escape")
    expect(search).to_have_value("")
    expect(results).to_have_count(len(httpx.get(f"{server}/api/threads", timeout=10).json()))

    search.fill("nosuchwordanywhere")
    expect(page.get_by_text("No thread matches “nosuchwordanywhere”.")).to_be_visible()


def test_delete_asks_first_then_removes_the_thread(page: Page, server: str) -> None:
    page.get_by_test_id("new-thread").click()
    ask(page, "echo: delete me soon")
    expect(page).to_have_url(THREAD_URL)
    thread_id = page.url.split("#", 1)[1]

    # Cancel keeps it.
    page.get_by_test_id("delete-thread").click()
    dialog = page.get_by_test_id("delete-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("delete me soon")
    expect(page.get_by_test_id("delete-cancel")).to_be_focused()  # the safe default
    screenshot(page, "delete-dialog")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert httpx.get(f"{server}/api/threads/{thread_id}", timeout=10).status_code == 200

    page.get_by_test_id("delete-thread").click()
    page.get_by_test_id("delete-confirm").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("toast")).to_contain_text("Thread deleted.")
    assert "#" not in page.url
    expect(
        page.get_by_test_id("thread-list").locator(f'li[data-thread-id="{thread_id}"]')
    ).to_have_count(0)
    assert httpx.get(f"{server}/api/threads/{thread_id}", timeout=10).status_code == 404
    listed = [t["id"] for t in httpx.get(f"{server}/api/threads", timeout=10).json()]
    assert thread_id not in listed


def test_a_search_hit_in_an_earlier_version_pages_to_it(page: Page) -> None:
    page.get_by_test_id("new-thread").click()
    ask(page, "echo: the walrus said hello")
    asked = page.locator(USER).last
    asked.hover()
    asked.get_by_role("button", name="Edit and resend this message").click()
    asked.get_by_test_id("edit-input").fill("echo: the seal said hello")
    asked.get_by_test_id("edit-input").press("Enter")
    expect(page.locator(USER).last.get_by_role("group", name="Version 2 of 2")).to_be_visible()
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_have_count(1, timeout=30_000)
    page.get_by_test_id("new-thread").click()

    page.get_by_test_id("thread-search").fill("walrus")
    hit = page.get_by_test_id("thread-list").locator("li a")
    expect(hit).to_have_count(1)
    hit.click()
    found = page.locator(".message--found")
    expect(found).to_have_count(1)
    expect(found).to_contain_text("walrus")
    expect(page.locator(USER).last.get_by_role("group", name="Version 1 of 2")).to_be_visible()
