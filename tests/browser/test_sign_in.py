"""Signing in with a token (SLIPSTREAM_AUTH=tokens) in Chromium, under the strict CSP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.browser.conftest import THREAD_URL, screenshot
from tests.browser.test_csp import COLLECT_VIOLATIONS
from tests.processes import embedded_service

pytestmark = pytest.mark.slow

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokens_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The embedded system with SLIPSTREAM_AUTH=tokens; its environment, for `users`."""
    with embedded_service(
        tmp_path_factory.mktemp("sign-in"),
        SLIPSTREAM_AUTH="tokens",
        SLIPSTREAM_SCRIPTED_DELAY_MS="0",
        SLIPSTREAM_SCRIPTED_WORDS="20",
    ) as running:
        yield running


def users(env: dict[str, str], *args: str) -> str:
    """`python -m service users ...` beside the running service (its embedded Redis)."""
    done = subprocess.run(
        [sys.executable, "-m", "service", "users", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def watched_page(browser: Browser, complaints: list[str]) -> Page:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(20_000)
    context.add_init_script(COLLECT_VIOLATIONS)
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        # The page's first question (who am I?) is answered 401 before signing in.
        if "Content Security Policy" in message.text or (
            message.type == "error" and "401" not in message.text
        ):
            complaints.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: complaints.append(str(error)))
    return page


def sign_in(page: Page, token: str) -> None:
    page.get_by_test_id("sign-in-token").fill(token)
    page.get_by_test_id("sign-in-submit").click()


def ask_in_a_new_thread(page: Page, question: str) -> None:
    """A new thread, live, with a question answered."""
    page.get_by_test_id("new-thread").click()
    expect(page.get_by_test_id("connection-status")).to_have_text("live")
    page.get_by_test_id("message-input").fill(question)
    page.get_by_test_id("send-button").click()
    expect(page).to_have_url(THREAD_URL)
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_be_visible(timeout=30_000)


def test_a_token_signs_the_chat_in_and_sign_out_ends_it(
    browser: Browser, tokens_server: tuple[str, dict[str, str]]
) -> None:
    base, env = tokens_server
    token = users(env, "add", "alice")
    complaints: list[str] = []
    page = watched_page(browser, complaints)
    page.goto(base)
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    expect(page.locator(".app")).to_have_js_property("inert", True)  # covered, and unreachable
    screenshot(page, "sign-in")

    sign_in(page, "ss_" + "x" * 43)
    expect(page.get_by_test_id("sign-in-error")).to_have_text(
        "That token is not valid. Check it, or ask for a new one."
    )
    sign_in(page, token)
    expect(page.get_by_test_id("sign-in")).to_be_hidden()
    expect(page.locator(".app")).to_have_js_property("inert", False)
    expect(page.get_by_test_id("signed-in")).to_contain_text("Signed in as alice")
    assert token not in page.content()
    cookies = page.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
        ("slipstream_session", True, "Lax")
    ]

    # The API and the socket both go on the cookie alone.
    ask_in_a_new_thread(page, "Hello from a signed-in page")
    page.reload()
    expect(page.get_by_test_id("signed-in")).to_contain_text("Signed in as alice")
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_be_visible()

    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    assert page.evaluate("window.__violations") == []
    assert complaints == []
    page.context.close()


def test_a_revoked_user_is_asked_to_sign_in_again(
    browser: Browser, tokens_server: tuple[str, dict[str, str]]
) -> None:
    base, env = tokens_server
    token = users(env, "add", "bob")
    page = watched_page(browser, [])
    page.goto(base)
    sign_in(page, token)
    page.get_by_test_id("new-thread").click()
    expect(page.get_by_test_id("connection-status")).to_have_text("live")
    users(env, "revoke", "bob")
    # The next request is refused: the page says why and asks again.
    page.get_by_test_id("message-input").fill("Still there?")
    page.get_by_test_id("send-button").click()
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    expect(page.get_by_test_id("sign-in-error")).to_contain_text("session has ended")
    page.context.close()


def test_two_users_in_two_browsers_do_not_see_each_others_threads(
    browser: Browser, tokens_server: tuple[str, dict[str, str]]
) -> None:
    base, env = tokens_server
    pages = {}
    for name in ("carol", "dave"):
        page = watched_page(browser, [])
        page.goto(base)
        sign_in(page, users(env, "add", name))
        expect(page.get_by_test_id("signed-in")).to_contain_text(f"Signed in as {name}")
        pages[name] = page
    carol, dave = pages["carol"], pages["dave"]
    ask_in_a_new_thread(carol, "Carol's private question")
    expect(carol.get_by_test_id("thread-list").locator("li")).to_have_count(1)

    # Dave's list stays empty, and carol's thread's address shows him nothing of it.
    dave.reload()
    expect(dave.get_by_test_id("signed-in")).to_contain_text("Signed in as dave")
    expect(dave.get_by_test_id("thread-list").locator("li")).to_have_count(0)
    dave.goto(carol.url)
    expect(dave.get_by_text("This thread isn't available")).to_be_visible()
    expect(dave.get_by_text("Carol's private question")).to_have_count(0)
    screenshot(dave, "another-users-thread")
    for page in pages.values():
        page.context.close()
