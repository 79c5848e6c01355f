"""Getting around the page: the skip link, Esc closing what is on top, and the
thread list as a drawer on a phone."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import screenshot
from tests.browser.test_csp import COLLECT_VIOLATIONS
from tests.processes import embedded_service

pytestmark = pytest.mark.slow

LONG_TITLE = "Quarterly planning notes for the infrastructure team, with every open question"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_service(
        tmp_path_factory.mktemp("navigation"),
        SLIPSTREAM_SCRIPTED_DELAY_MS="10",
        SLIPSTREAM_SCRIPTED_WORDS="12",
    ) as (url, _env):
        yield url


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    context.add_init_script(COLLECT_VIOLATIONS)
    opened = context.new_page()
    yield opened
    assert opened.evaluate("window.__violations") == []


def new_thread(server: str, title: str = "") -> str:
    made = httpx.post(f"{server}/api/threads", json={"title": title}, timeout=10)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def open_thread(page: Page, server: str, thread: str) -> None:
    page.goto(f"{server}/#{thread}")
    expect(page.get_by_test_id("connection-status")).to_have_text("live")


def test_the_skip_link_moves_focus_to_the_message_box_and_stays_on_the_thread(
    page: Page, server: str
) -> None:
    thread = new_thread(server, "Where the skip link goes")
    open_thread(page, server, thread)
    page.keyboard.press("Tab")  # the first stop on the page
    skip = page.get_by_role("link", name="Skip to the message box")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()  # shown while focused
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("message-input")).to_be_focused()
    assert page.url == f"{server}/#{thread}"
    expect(page.get_by_test_id("thread-title")).to_have_text("Where the skip link goes")
    expect(page.locator("#empty-state")).not_to_contain_text("isn't available")


def test_a_fragment_naming_an_element_is_no_thread(page: Page, server: str) -> None:
    thread = new_thread(server, "Still open")
    open_thread(page, server, thread)
    # Followed by hand (no script stops it), the anchor leaves the open thread be.
    page.evaluate("location.hash = '#message-input'")
    expect(page).to_have_url(re.compile(r"#message-input$"))
    expect(page.get_by_test_id("thread-title")).to_have_text("Still open")
    # Loaded as is, it is a fresh conversation, not a missing thread.
    page.reload()
    expect(page.get_by_test_id("thread-title")).to_have_text("New conversation")
    expect(page.locator("#empty-state")).not_to_contain_text("isn't available")


def test_escape_closes_the_inspector_wherever_focus_is(page: Page, server: str) -> None:
    open_thread(page, server, new_thread(server, "Inspect me"))
    toggle = page.get_by_test_id("inspector-toggle")
    toggle.click()
    expect(page.get_by_test_id("inspector")).to_be_visible()
    box = page.get_by_test_id("message-input")
    box.fill("half a thought")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("inspector")).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(box).to_be_focused()  # focus stays where the reader was
    expect(box).to_have_value("half a thought")
    # From inside the panel, focus goes back to the button that opened it.
    toggle.click()
    page.get_by_test_id("inspector-rows").focus()
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("inspector")).to_be_hidden()
    expect(toggle).to_be_focused()


def test_escape_closes_an_open_dialog_with_focus_outside_it(page: Page, server: str) -> None:
    open_thread(page, server, new_thread(server))
    page.evaluate(
        """() => {
          const dialog = document.createElement("dialog");
          dialog.id = "test-dialog";
          dialog.textContent = "A note";
          document.body.append(dialog);
          dialog.show();
        }"""
    )
    dialog = page.locator("#test-dialog")
    expect(dialog).to_be_visible()
    page.get_by_test_id("message-input").focus()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_on_a_phone_the_threads_are_a_drawer(page: Page, server: str) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    other = new_thread(server, "The other thread")
    thread = new_thread(server, LONG_TITLE)
    open_thread(page, server, thread)
    menu = page.get_by_role("button", name="Threads")
    sidebar = page.locator("#sidebar")
    expect(sidebar).to_be_hidden()
    expect(menu).to_have_attribute("aria-expanded", "false")
    current = page.locator("#thread-list a[aria-current='page']")
    expect(current).to_have_attribute("data-thread-id", thread)  # the list has come

    menu.click()
    expect(sidebar).to_be_visible()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#conversation")).to_have_attribute("inert", "")
    expect(current).to_be_focused()
    # The whole title, wrapped over lines rather than cut.
    title = current.locator(".thread__title")
    expect(title).to_have_text(LONG_TITLE)
    fits = title.evaluate(
        "t => t.scrollWidth <= t.clientWidth && t.getBoundingClientRect().height > 30"
    )
    assert fits, "the title should wrap, whole"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # Archiving this thread and showing the archived ones: two icons, two names.
    archive = page.get_by_role("button", name="Archive thread")
    archived = page.get_by_role("button", name="Archived")
    expect(archived).to_be_visible()
    paths = [b.locator("svg path").get_attribute("d") for b in (archive, archived)]
    assert paths[0] != paths[1]
    expect(sidebar).to_have_css("transform", "none")  # slid all the way in
    screenshot(page, "phone-drawer")

    page.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    expect(menu).to_be_focused()
    expect(page.locator("#conversation")).not_to_have_attribute("inert", "")

    menu.click()
    expect(sidebar).to_be_visible()
    page.mouse.click(370, 420)  # on the conversation, beside the drawer
    expect(sidebar).to_be_hidden()
    expect(page).to_have_url(re.compile(f"#{thread}$"))

    menu.click()
    page.locator(f"#thread-list a[data-thread-id='{other}']").click()
    expect(sidebar).to_be_hidden()
    expect(page).to_have_url(re.compile(f"#{other}$"))
    expect(page.get_by_test_id("thread-title")).to_have_text("The other thread")
