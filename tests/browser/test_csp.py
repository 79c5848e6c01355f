"""The chat under its strict Content-Security-Policy: it works, and the browser reports nothing."""

from __future__ import annotations

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, expect

from service.security import CONTENT_SECURITY_POLICY
from tests.browser.conftest import THREAD_URL

pytestmark = pytest.mark.slow

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
# Installed before the page's own scripts, so a violation while they load is caught too.
COLLECT_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__violations.push(`${e.violatedDirective} blocked ${e.blockedURI} (${where})`);
});
"""


def test_the_chat_works_under_the_csp_with_no_violation(
    context: BrowserContext, server: str
) -> None:
    context.add_init_script(COLLECT_VIOLATIONS)
    page = context.new_page()
    complaints: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            complaints.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: complaints.append(str(error)))
    response = page.goto(server)
    assert response is not None
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY

    page.get_by_test_id("new-thread").click()
    expect(page.get_by_test_id("connection-status")).to_have_text("live")
    # Markdown with a code block: the renderer, the sanitiser and the copy button all run.
    page.get_by_test_id("message-input").fill("Explain `XADD` with *one* example:\n\n```\nx\n```")
    page.get_by_test_id("send-button").click()
    expect(page).to_have_url(THREAD_URL)  # not wait_for_function: the CSP forbids its eval
    expect(page.locator(f'{ASSISTANT}[data-status="completed"]')).to_be_visible(timeout=30_000)
    assert page.locator(f"{ASSISTANT} .content").last.inner_text().strip()

    assert page.evaluate("window.__violations") == []
    assert complaints == []
