"""Agents at work in a real browser: routing, a tool call, an approval, two agents at once.

The server runs the shipped agents plus `cautious`, whose calculator needs a
person's yes, so an approval needs no network. The scripted model calls the
tools a message names (`[[tool NAME {json}]]`) and then writes
`NAME returned RESULT.` before its usual answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, WebSocketRoute, expect

from consumers.agents import SHIPPED_FILE
from tests.browser.conftest import screenshot
from tests.browser.shown import shown
from tests.ports import free_port
from tests.processes import env_for, kill_pidfile, spawn, stop, wait_healthy

pytestmark = pytest.mark.slow

ASSISTANT = '[data-testid="message"][data-role="assistant"]'
CALCULATE = '[[tool calculator {"expression": "2+3"}]]'
CAUTIOUS = """
[[agents]]
name = "cautious"
description = "Does arithmetic, but only with a person's yes."
system = "You do arithmetic with the calculator, once a person has approved each call."
tools = ["calculator"]
approve = ["calculator"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded system with the shipped agents and `cautious`; short, slowish answers."""
    workdir = tmp_path_factory.mktemp("browser-agents")
    agents = workdir / "agents.toml"
    agents.write_text(SHIPPED_FILE.read_text() + CAUTIOUS)
    port = free_port()
    env = env_for(
        PORT=str(port),
        SLIPSTREAM_DATA_DIR=str(workdir / "data"),
        SLIPSTREAM_AGENTS=str(agents),
        SLIPSTREAM_SCRIPTED_DELAY_MS="40",
        SLIPSTREAM_SCRIPTED_WORDS="40",
    )
    process = spawn("service", env, workdir / "service.log")
    try:
        wait_healthy(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        kill_pidfile(workdir / "data" / "redis" / "redis.pid")


def new_thread(page: Page) -> None:
    """A draft: the thread is saved with its first message."""
    page.get_by_test_id("new-thread").click()
    expect(page.get_by_test_id("message-input")).to_be_focused()
    expect(page.get_by_test_id("connection-status")).to_have_text("live")


def saved_thread(page: Page, server: str) -> str:
    """A thread that exists before its first message, open in `page`."""
    thread_id: str = httpx.post(f"{server}/api/threads", json={}, timeout=10).json()["id"]
    page.goto(f"{server}/#{thread_id}")
    expect(page.get_by_test_id("connection-status")).to_have_text("live")
    return thread_id


def send(page: Page, text: str, agent: str) -> None:
    """Send from the composer to `agent` ("" for Auto: the router decides)."""
    picker = page.get_by_test_id("agent-select")
    expect(picker.locator(f'option[value="{agent}"]')).to_have_count(1)  # agents loaded
    picker.select_option(agent)
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("send-button").click()


def tool_card(page: Page, tool: str) -> Locator:
    return page.locator(f'{ASSISTANT} [data-testid="tool-call"][data-tool="{tool}"]').last


def test_a_routed_tool_call_shows_its_card_result_and_usage(page: Page) -> None:
    new_thread(page)
    send(page, f"Please calculate this: {CALCULATE}", "")  # "calculate": researcher's rule
    reply = page.locator(ASSISTANT).last
    expect(reply.locator(".message__author")).to_have_text("researcher")
    # A short line says who and what the rule matched; the tooltip has the whole reason.
    routed = reply.get_by_test_id("routed")
    expect(routed).to_have_text("→ researcher · rule matched “calculate”")
    expect(routed).to_have_attribute("title", re.compile(r"^Routed to researcher by rule: .+"))
    card = tool_card(page, "calculator")
    expect(card.get_by_test_id("tool-name")).to_have_text("calculator")
    expect(card).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(card.get_by_test_id("tool-status")).to_contain_text("done")
    # Collapsed, the card names its argument on one line; opened, it shows it and the result.
    expect(card.locator(".tool__summary")).to_contain_text('expression: "2+3"')
    expect(card.get_by_test_id("tool-args")).to_be_hidden()
    card.locator(".tool__summary").click()
    expect(card.get_by_test_id("tool-args")).to_contain_text("expression")
    expect(card.get_by_test_id("tool-args")).to_contain_text("2+3")
    expect(card.get_by_test_id("tool-result")).to_have_text("5")
    expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(reply.locator(".content")).to_contain_text("calculator returned 5.")
    # The run's tokens on the answer, the thread's in the header.
    expect(reply.get_by_test_id("message-usage")).to_have_text(re.compile(r"^\d+ in · \d+ out$"))
    expect(page.get_by_test_id("thread-usage")).to_have_text(re.compile(r"^\d+ tokens$"))
    screenshot(page, "tool-call")
    # The card is a keyboard control: Enter on its summary closes it again.
    card.locator(".tool__summary").focus()
    page.keyboard.press("Enter")
    expect(card.get_by_test_id("tool-args")).to_be_hidden()


def test_a_tool_call_waits_for_approval_and_a_denial_reaches_the_answer(page: Page) -> None:
    """Needs the approval backend (run.waiting for a call, the `approval` signal for chat runs)."""
    new_thread(page)
    send(page, f"Add these up: {CALCULATE}", "cautious")
    reply = page.locator(ASSISTANT).last
    card = tool_card(page, "calculator")
    expect(card).to_have_attribute("data-status", "waiting", timeout=30_000)
    expect(reply).to_have_attribute("data-status", "waiting")
    # The call opens itself with its arguments; the run waits for a person, so no Stop.
    expect(card.get_by_test_id("tool-args")).to_contain_text("2+3")
    expect(card.get_by_test_id("approve-button")).to_be_visible()
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    screenshot(page, "tool-approval")
    card.get_by_test_id("deny-reason").fill("not today")
    card.get_by_test_id("deny-button").click()
    # A person's no is its own quiet state, not an error.
    expect(card).to_have_attribute("data-status", "denied", timeout=30_000)
    expect(card.get_by_test_id("tool-status")).to_have_text("denied")
    expect(card.get_by_test_id("tool-result")).to_contain_text("not today")
    expect(card.get_by_test_id("approve-button")).to_be_hidden()
    expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(reply.locator(".content")).to_contain_text("calculator returned")

    # Asked again, and approved: the calculator runs and the answer uses its result.
    send(page, f"Once more: {CALCULATE}", "cautious")
    card = tool_card(page, "calculator")
    expect(page.locator(f"{ASSISTANT}")).to_have_count(2)
    expect(card).to_have_attribute("data-status", "waiting", timeout=30_000)
    card.get_by_test_id("approve-button").click()
    expect(card).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(card.get_by_test_id("tool-result")).to_have_text("5")
    reply = page.locator(ASSISTANT).last
    expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(reply.locator(".content")).to_contain_text("calculator returned 5.")


def test_two_agents_stream_into_one_thread_at_once(page: Page, server: str) -> None:
    """Needs the several-agents backend (`agents: [...]` on POST messages).

    Two mentions at the start of a message send it to both (`agents`).
    """
    thread_id = saved_thread(page, server)
    send(page, "@writer @critic A short note about streams, please", "assistant")
    asked = page.locator('[data-testid="message"][data-role="user"]').last
    expect(asked.locator(".message__to")).to_have_text("to writer, critic")
    expect(asked.locator(".content")).to_have_text("A short note about streams, please")
    writer = page.locator(ASSISTANT).filter(has=page.locator(".message__author", has_text="writer"))
    critic = page.locator(ASSISTANT).filter(has=page.locator(".message__author", has_text="critic"))
    # Both answers are on the page and written at the same time, each its own message.
    expect(page.locator(f'{ASSISTANT}[data-status="streaming"]')).to_have_count(2, timeout=30_000)
    expect(writer).to_have_count(1)
    expect(critic).to_have_count(1)
    screenshot(page, "two-agents")
    for reply in (writer, critic):
        expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
        expect(reply.locator('[data-action="previous-answer"]')).to_be_hidden()  # not one pager
        expect(reply.get_by_test_id("routed")).to_have_text("→ writer, critic")  # once each
        # Each agent's latest answer can be written again, not only the last one.
        expect(reply.locator('[data-action="regenerate"]')).to_be_visible()
    view = httpx.get(f"{server}/api/threads/{thread_id}", timeout=10).json()
    answers = {m["agent"]: m["content"] for m in view["messages"] if m["role"] == "assistant"}
    assert set(answers) == {"writer", "critic"}
    for agent, text in answers.items():
        reply = writer if agent == "writer" else critic
        assert " ".join(reply.locator(".content").inner_text().split()) == shown(text)


def test_a_hand_off_says_where_the_answer_went(page: Page) -> None:
    """The handing agent's message may be empty: a line under it names who took over."""
    new_thread(page)
    send(page, "draft this [[handoff critic]]", "writer")
    writer = page.locator(ASSISTANT).filter(has=page.locator(".message__author", has_text="writer"))
    critic = page.locator(ASSISTANT).filter(has=page.locator(".message__author", has_text="critic"))
    expect(writer.get_by_test_id("handed-off")).to_have_text(
        re.compile(r"^→ handed off to critic( — .+)?$"), timeout=30_000
    )
    expect(critic.get_by_test_id("routed")).to_contain_text("handed off by writer")
    expect(critic.get_by_test_id("handed-off")).to_be_hidden()
    expect(critic).to_have_attribute("data-status", "completed", timeout=30_000)
    # The tokens are the run's, every agent in it: the label says so.
    expect(critic.get_by_test_id("message-usage")).to_have_text(
        re.compile(r"^run: \d+ in · \d+ out$")
    )
    expect(writer.get_by_test_id("message-usage")).to_be_hidden()
    screenshot(page, "handoff")


class HeldFrames:
    """A page's thread socket whose frames from the server can be held back, then let go."""

    def __init__(self) -> None:
        self.holding = False
        self.held: list[tuple[WebSocketRoute, str | bytes]] = []

    def route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        if "/api/live/threads" in ws.url:
            return  # the thread list: left alone (connect_to_server forwards by default)

        def from_server(message: str | bytes) -> None:
            if self.holding:
                self.held.append((ws, message))
            else:
                ws.send(message)

        server.on_message(from_server)

    def release(self) -> None:
        self.holding = False
        for ws, message in self.held:
            ws.send(message)
        self.held.clear()


def test_a_call_decided_in_another_tab_is_no_error_here(
    page: Page, context: BrowserContext, server: str
) -> None:
    """Tab B still shows the call waiting when tab A's denial lands: B's yes gets a 409."""
    thread_id = saved_thread(page, server)
    frames = HeldFrames()
    other = context.new_page()
    other.route_web_socket(re.compile(r"/api/"), frames.route)
    other.goto(f"{server}/#{thread_id}")
    expect(other.get_by_test_id("connection-status")).to_have_text("live")
    answers: list[int] = []
    other.on("response", lambda r: answers.append(r.status) if r.url.endswith("/signal") else None)

    send(page, f"Add these up: {CALCULATE}", "cautious")
    for tab in (page, other):
        expect(tool_card(tab, "calculator")).to_have_attribute(
            "data-status", "waiting", timeout=30_000
        )
    frames.holding = True  # B hears nothing more, so it still shows the question
    tool_card(page, "calculator").get_by_test_id("deny-button").click()
    expect(tool_card(page, "calculator")).to_have_attribute("data-status", "denied", timeout=30_000)
    card = tool_card(other, "calculator")
    card.get_by_test_id("approve-button").click()
    # Decided elsewhere: no red banner, a quiet note, and no second decision to send.
    expect(card.get_by_test_id("approval-note")).to_contain_text("Already decided")
    assert answers == [409]
    expect(other.locator("#error-banner")).to_be_hidden()
    expect(card.get_by_test_id("approve-button")).to_be_disabled()
    screenshot(other, "approval-decided-elsewhere")
    frames.release()  # the view catches up and shows what happened
    expect(card).to_have_attribute("data-status", "denied", timeout=30_000)
    expect(card.get_by_test_id("approve-button")).to_be_hidden()
    expect(other.locator("#error-banner")).to_be_hidden()


def test_approval_by_keyboard_keeps_focus_and_enter_sends_a_denial(page: Page) -> None:
    new_thread(page)
    send(page, f"Add these up: {CALCULATE}", "cautious")
    card = tool_card(page, "calculator")
    expect(card).to_have_attribute("data-status", "waiting", timeout=30_000)
    reason = card.get_by_test_id("deny-reason")
    expect(reason).to_have_attribute("maxlength", "2000")
    reason.fill("not by keyboard")
    reason.press("Enter")  # Enter in the reason box sends the denial
    expect(card).to_have_attribute("data-status", "denied", timeout=30_000)
    expect(card.get_by_test_id("tool-result")).to_contain_text("not by keyboard")
    # The control that went away handed focus to the card, not to the page.
    focused: Any = page.evaluate("document.activeElement.className")
    assert focused == "tool__summary"
    expect(page.locator(ASSISTANT).last).to_have_attribute("data-status", "completed")

    send(page, f"Once more: {CALCULATE}", "cautious")
    expect(page.locator(ASSISTANT)).to_have_count(2)
    card = tool_card(page, "calculator")
    expect(card).to_have_attribute("data-status", "waiting", timeout=30_000)
    card.get_by_test_id("approve-button").focus()
    page.keyboard.press("Enter")
    expect(card).to_have_attribute("data-status", "completed", timeout=30_000)
    assert page.evaluate("document.activeElement.className") == "tool__summary"
    expect(card.get_by_test_id("tool-result")).to_be_visible()  # it opened itself to ask
    page.keyboard.press("Enter")  # still on the card: Enter closes it
    expect(card.get_by_test_id("tool-result")).to_be_hidden()


def test_on_a_phone_a_message_queued_behind_an_approval_says_so(page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_test_id("menu-button").click()  # New thread is in the drawer on a phone
    new_thread(page)
    send(page, f"Add these up: {CALCULATE}", "cautious")
    card = tool_card(page, "calculator")
    expect(card).to_have_attribute("data-status", "waiting", timeout=30_000)
    # The run waiting for a person holds cautious's lane: the next message waits for it.
    send(page, "And then this, please", "cautious")
    queued = page.locator(ASSISTANT).last
    expect(queued.locator(".message__status")).to_have_text(
        "Queued — cautious waits for an approval"
    )
    # The header wraps whole parts on a narrow screen: a time or a count is never split.
    for part in page.locator(f"{ASSISTANT} .message__meta > :not([hidden])").all():
        box = part.bounding_box()
        assert box is not None and box["height"] < 24, part.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "queued-behind-approval-phone")
    card.get_by_test_id("approve-button").click()
    expect(queued).to_have_attribute("data-status", "completed", timeout=30_000)


def test_the_review_workflow_shows_three_agents_answering(page: Page) -> None:
    new_thread(page)
    send(page, "A note telling the team the office is closed on Friday", "review")
    done = page.locator(f'{ASSISTANT}[data-status="completed"]')
    expect(done).to_have_count(3, timeout=30_000)
    authors = page.locator(f"{ASSISTANT} .message__author").all_inner_texts()
    assert authors == ["writer", "critic", "writer"]
    screenshot(page, "review")
